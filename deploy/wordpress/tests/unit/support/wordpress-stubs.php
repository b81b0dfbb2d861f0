<?php
/**
 * The few WordPress functions the plugin's hook path calls, for unit tests that run without
 * WordPress: a working hook registry, options in memory, a recording $wpdb, and HTTP functions
 * that record every call (the "the hook makes no HTTP call" test reads that record).
 */

define( 'ABSPATH', __DIR__ . '/' );
define( 'ARRAY_A', 'ARRAY_A' );
define( 'MINUTE_IN_SECONDS', 60 );
define( 'DAY_IN_SECONDS', 86400 );

final class FormBridgeTestWorld {
	/** @var array<string, array<int, list<array{0: callable, 1: int}>>> */
	public static array $hooks = array();
	/** @var array<string, mixed> */
	public static array $options = array();
	/** @var list<array{0: string, 1: string}> function name and URL of every HTTP call */
	public static array $httpCalls = array();
	/** @var list<array{0: int, 1: string, 2: array}> */
	public static array $singleEvents = array();

	public static function reset(): void {
		self::$hooks        = array();
		self::$options      = array();
		self::$httpCalls    = array();
		self::$singleEvents = array();
		$GLOBALS['wpdb']    = new FormBridgeFakeWpdb();
	}

	public static function callbacks( string $hook ): array {
		$byPriority = self::$hooks[ $hook ] ?? array();
		ksort( $byPriority );
		return array_merge( ...array_values( $byPriority ) ?: array( array() ) );
	}
}

/** Records inserts; the hook path needs nothing else from the database. */
final class FormBridgeFakeWpdb {
	public string $prefix = 'wp_';
	public int $insert_id = 0;
	public string $last_error = '';
	/** @var array<string, list<array<string, mixed>>> */
	public array $inserted = array();

	public function insert( string $table, array $data, $format = null ): int {
		$this->inserted[ $table ][] = $data;
		$this->insert_id++;
		return 1;
	}

	public function get_charset_collate(): string {
		return '';
	}
}

class WP_Error {
	public function __construct( private string $code = '', private string $message = '' ) {}

	public function get_error_message(): string {
		return $this->message;
	}
}

function add_filter( string $hook, callable $callback, int $priority = 10, int $accepted_args = 1 ): bool {
	FormBridgeTestWorld::$hooks[ $hook ][ $priority ][] = array( $callback, $accepted_args );
	return true;
}

function add_action( string $hook, callable $callback, int $priority = 10, int $accepted_args = 1 ): bool {
	return add_filter( $hook, $callback, $priority, $accepted_args );
}

function apply_filters( string $hook, mixed $value, mixed ...$args ): mixed {
	foreach ( FormBridgeTestWorld::callbacks( $hook ) as [ $callback, $accepted ] ) {
		$value = $callback( ...array_slice( array_merge( array( $value ), $args ), 0, $accepted ) );
	}
	return $value;
}

function do_action( string $hook, mixed ...$args ): void {
	foreach ( FormBridgeTestWorld::callbacks( $hook ) as [ $callback, $accepted ] ) {
		$callback( ...array_slice( $args, 0, $accepted ) );
	}
}

function get_option( string $name, mixed $default = false ): mixed {
	return FormBridgeTestWorld::$options[ $name ] ?? $default;
}

function update_option( string $name, mixed $value, $autoload = null ): bool {
	FormBridgeTestWorld::$options[ $name ] = $value;
	return true;
}

function delete_option( string $name ): bool {
	unset( FormBridgeTestWorld::$options[ $name ] );
	return true;
}

function home_url( string $path = '' ): string {
	return 'https://shop.example.com' . $path;
}

function wp_parse_url( string $url, int $component = -1 ): mixed {
	return parse_url( $url, $component );
}

function wp_salt( string $scheme = 'auth' ): string {
	return 'unit-test-salt-' . $scheme;
}

function __( string $text, string $domain = 'default' ): string {
	return $text;
}

function wp_http_validate_url( string $url ): string|false {
	return str_starts_with( $url, 'https://' ) ? $url : false;
}

function wp_schedule_single_event( int $timestamp, string $hook, array $args = array() ): bool {
	FormBridgeTestWorld::$singleEvents[] = array( $timestamp, $hook, $args );
	return true;
}

function wp_next_scheduled( string $hook, array $args = array() ): int|false {
	return false;
}

function wp_schedule_event( int $timestamp, string $recurrence, string $hook, array $args = array() ): bool {
	return true;
}

function is_wp_error( mixed $thing ): bool {
	return $thing instanceof WP_Error;
}

function form_bridge_record_http( string $function, string $url ): WP_Error {
	FormBridgeTestWorld::$httpCalls[] = array( $function, $url );
	return new WP_Error( 'http_request_failed', 'no network in unit tests' );
}

function wp_safe_remote_post( string $url, array $args = array() ) {
	return form_bridge_record_http( __FUNCTION__, $url );
}

function wp_safe_remote_request( string $url, array $args = array() ) {
	return form_bridge_record_http( __FUNCTION__, $url );
}

function wp_safe_remote_get( string $url, array $args = array() ) {
	return form_bridge_record_http( __FUNCTION__, $url );
}

function wp_remote_post( string $url, array $args = array() ) {
	return form_bridge_record_http( __FUNCTION__, $url );
}

function wp_remote_get( string $url, array $args = array() ) {
	return form_bridge_record_http( __FUNCTION__, $url );
}

function wp_remote_request( string $url, array $args = array() ) {
	return form_bridge_record_http( __FUNCTION__, $url );
}

function spawn_cron( $gmt_time = 0 ): bool {
	form_bridge_record_http( __FUNCTION__, 'wp-cron.php' );
	return true;
}
