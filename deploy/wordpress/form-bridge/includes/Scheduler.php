<?php
/**
 * When the outbox is sent:
 *
 * 1. After the visitor's response. Under PHP-FPM (or LiteSpeed) the response is finished first,
 *    then due rows are sent in the same process. Elsewhere, where Action Scheduler is present,
 *    an async action is queued; otherwise a one-off WP-Cron event is scheduled for now and WP-Cron
 *    is spawned (a non-blocking loopback request) once the page is done.
 * 2. Every minute: a recurring Action Scheduler action where the site has Action Scheduler
 *    (WooCommerce sites do), else a WP-Cron event. With DISABLE_WP_CRON, a system cron job
 *    calling wp-cron.php every minute drives it (the recommended production set-up).
 *
 * Nothing here sends during the form plugin's hook: the hook only writes a row and asks for one
 * of the above.
 */

namespace FormBridge;

final class Scheduler {
	public const HOOK     = 'form_bridge_dispatch';
	public const NOW_HOOK = 'form_bridge_dispatch_now';
	public const SCHEDULE = 'form_bridge_every_minute';
	public const GROUP    = 'form-bridge';

	private bool $shutdownRegistered = false;

	/** @param \Closure(): void $runJob sends due rows and prunes */
	public function __construct( private readonly \Closure $runJob ) {}

	public function register(): void {
		add_filter( 'cron_schedules', array( self::class, 'addSchedule' ) );
		add_action( self::HOOK, $this->runJob );
		add_action( self::NOW_HOOK, $this->runJob );
		add_action( 'init', array( $this, 'ensureRecurring' ), 20 );
	}

	/** @param array<string, array{interval: int, display: string}> $schedules */
	public static function addSchedule( array $schedules ): array {
		$schedules[ self::SCHEDULE ] = array( 'interval' => MINUTE_IN_SECONDS, 'display' => 'Every minute (Form-Bridge)' );
		return $schedules;
	}

	public static function hasActionScheduler(): bool {
		return function_exists( 'as_schedule_recurring_action' ) && function_exists( 'as_has_scheduled_action' ) && function_exists( 'as_enqueue_async_action' );
	}

	/** Makes sure the every-minute job exists (self-healing if an event was lost). */
	public function ensureRecurring(): void {
		if ( self::hasActionScheduler() ) {
			if ( ! as_has_scheduled_action( self::HOOK, array(), self::GROUP ) ) {
				as_schedule_recurring_action( time(), MINUTE_IN_SECONDS, self::HOOK, array(), self::GROUP );
			}
			wp_clear_scheduled_hook( self::HOOK );
			return;
		}
		if ( ! wp_next_scheduled( self::HOOK ) ) {
			wp_schedule_event( time(), self::SCHEDULE, self::HOOK );
		}
	}

	/** Asks for the outbox to be sent once this request's response is out. Makes no HTTP call. */
	public function requestSendAfterResponse( int $rowId ): void {
		if ( self::canFinishRequest() ) {
			$this->onShutdown( array( $this, 'finishThenSend' ) );
			return;
		}
		if ( self::hasActionScheduler() ) {
			as_enqueue_async_action( self::HOOK, array(), self::GROUP );
			return;
		}
		wp_schedule_single_event( time(), self::NOW_HOOK, array( $rowId ) );
		if ( ! ( defined( 'DISABLE_WP_CRON' ) && DISABLE_WP_CRON ) ) {
			$this->onShutdown( array( self::class, 'spawnCron' ) );
		}
	}

	public function finishThenSend(): void {
		if ( function_exists( 'fastcgi_finish_request' ) ) {
			fastcgi_finish_request();
		} elseif ( function_exists( 'litespeed_finish_request' ) ) {
			litespeed_finish_request();
		}
		( $this->runJob )();
	}

	public static function spawnCron(): void {
		if ( function_exists( 'spawn_cron' ) ) {
			spawn_cron();
		}
	}

	public static function unscheduleAll(): void {
		wp_clear_scheduled_hook( self::HOOK );
		wp_unschedule_hook( self::NOW_HOOK );
		if ( function_exists( 'as_unschedule_all_actions' ) ) {
			as_unschedule_all_actions( self::HOOK, array(), self::GROUP );
		}
	}

	private static function canFinishRequest(): bool {
		return ( function_exists( 'fastcgi_finish_request' ) || function_exists( 'litespeed_finish_request' ) ) && 'cli' !== PHP_SAPI;
	}

	private function onShutdown( callable $callback ): void {
		if ( $this->shutdownRegistered ) {
			return;
		}
		$this->shutdownRegistered = true;
		add_action( 'shutdown', $callback, PHP_INT_MAX );
	}
}
