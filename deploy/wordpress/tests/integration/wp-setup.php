<?php
/**
 * Installs WordPress and configures Form-Bridge without WP-CLI, through WordPress's own PHP
 * entry points. Run with the PHP CLI, twice (each step needs a fresh WordPress load):
 *
 *   php wp-setup.php install   URL                       wp_install() into the configured database
 *   php wp-setup.php activate  URL ENDPOINT DOMAIN SECRET_FILE
 *                                                       activate_plugin() and save the settings
 *
 * FB_WP_DIR names the WordPress directory (its wp-config.php holds the database settings).
 */

if ( PHP_SAPI !== 'cli' ) {
	exit( 1 );
}

[ , $step, $url ] = $argv + array( null, null, null );
$wp_dir           = getenv( 'FB_WP_DIR' );
if ( ! $wp_dir || ! in_array( $step, array( 'install', 'activate' ), true ) || ! $url ) {
	fwrite( STDERR, "usage: FB_WP_DIR=... php wp-setup.php install|activate URL [ENDPOINT DOMAIN SECRET_FILE]\n" );
	exit( 2 );
}

$parts                  = parse_url( $url );
$_SERVER['HTTP_HOST']   = $parts['host'] . ( isset( $parts['port'] ) ? ':' . $parts['port'] : '' );
$_SERVER['SERVER_NAME'] = $parts['host'];
$_SERVER['REQUEST_URI'] = '/';

// WordPress spawns WP-Cron on load by a loopback request to the site, which is not served yet:
// the request would fail and leave WP-Cron's lock set for a minute. This script needs no cron.
define( 'DISABLE_WP_CRON', true );

function form_bridge_setup_fail( string $message ): void {
	fwrite( STDERR, "wp-setup: $message\n" );
	exit( 1 );
}

if ( 'install' === $step ) {
	define( 'WP_INSTALLING', true );
	// A pluggable function: this machine has no mail transport for the "new site" e-mail.
	function wp_new_blog_notification( $blog_title, $blog_url, $user_id, $password ) {}
	require $wp_dir . '/wp-load.php';
	require_once ABSPATH . 'wp-admin/includes/upgrade.php';
	if ( is_blog_installed() ) {
		form_bridge_setup_fail( 'WordPress is already installed in this database' );
	}
	$result = wp_install( 'Form-Bridge integration', 'admin', 'admin@example.test', false, '', wp_generate_password( 24 ) );
	update_option( 'siteurl', $url );
	update_option( 'home', $url );
	echo "installed WordPress {$GLOBALS['wp_version']} at $url (user {$result['user_id']})\n";
	exit( 0 );
}

[ , , , $endpoint, $domain, $secret_file ] = $argv + array_fill( 0, 6, null );
require $wp_dir . '/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/plugin.php';

$activated = activate_plugin( 'form-bridge/form-bridge.php' );
if ( is_wp_error( $activated ) ) {
	form_bridge_setup_fail( 'activate_plugin: ' . $activated->get_error_message() );
}
$secret   = trim( (string) file_get_contents( $secret_file ) );
$problems = FormBridge\Settings::save( array( 'endpoint' => $endpoint, 'site_domain' => $domain, 'secret' => $secret, 'include_ip' => '1' ) );
if ( array() !== $problems ) {
	form_bridge_setup_fail( 'settings: ' . implode( ' ', $problems ) );
}
global $wpdb;
$table = ( new FormBridge\Outbox() )->table();
if ( $wpdb->get_var( "SHOW TABLES LIKE '$table'" ) !== $table ) {
	form_bridge_setup_fail( "the activation hook did not create $table" );
}
echo 'activated Form-Bridge ' . FormBridge\Plugin::VERSION . ", outbox table $table\n";
