<?php
/**
 * Where a site has Action Scheduler (WooCommerce sites do), the outbox is driven by it: an async
 * action after each submission and a recurring one every minute, instead of WP-Cron. Runs in its
 * own process, because defining Action Scheduler's functions cannot be undone.
 *
 * @runTestsInSeparateProcesses
 * @preserveGlobalState disabled
 */

use FormBridge\Scheduler;

final class ActionSchedulerTest extends HookPathTestCase {
	protected function setUp(): void {
		require_once __DIR__ . '/support/action-scheduler-stubs.php';
		FormBridgeActionSchedulerCalls::$calls = array();
		parent::setUp();
	}

	public function test_a_submission_queues_an_async_action_and_no_wp_cron_event(): void {
		self::fire( self::cases()['gravityforms'] );

		$this->assertCount( 1, self::queuedRows() );
		$this->assertSame( array( array( 'as_enqueue_async_action', Scheduler::HOOK, Scheduler::GROUP ) ), FormBridgeActionSchedulerCalls::$calls );
		$this->assertSame( array(), FormBridgeTestWorld::$singleEvents );
		$this->assertSame( array(), FormBridgeTestWorld::callbacks( 'shutdown' ) );
		$this->assertSame( array(), FormBridgeTestWorld::$httpCalls );
	}

	public function test_the_every_minute_job_is_a_recurring_action(): void {
		( new Scheduler( static fn() => null ) )->ensureRecurring();
		$this->assertSame( array( array( 'as_schedule_recurring_action', Scheduler::HOOK, Scheduler::GROUP, 60 ) ), FormBridgeActionSchedulerCalls::$calls );
	}
}
