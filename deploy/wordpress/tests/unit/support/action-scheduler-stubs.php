<?php
/** Action Scheduler's public functions, recording their calls. */

final class FormBridgeActionSchedulerCalls {
	public static array $calls = array();
}

function as_enqueue_async_action( string $hook, array $args = array(), string $group = '' ): int {
	FormBridgeActionSchedulerCalls::$calls[] = array( __FUNCTION__, $hook, $group );
	return 1;
}

function as_schedule_recurring_action( int $timestamp, int $interval, string $hook, array $args = array(), string $group = '' ): int {
	FormBridgeActionSchedulerCalls::$calls[] = array( __FUNCTION__, $hook, $group, $interval );
	return 1;
}

function as_has_scheduled_action( string $hook, ?array $args = null, string $group = '' ): bool {
	return false;
}

function wp_clear_scheduled_hook( string $hook, array $args = array() ): int {
	return 0;
}
