<?php
/**
 * The visitor's request is never slowed by the network: a form plugin's hook only writes an
 * outbox row and asks for a send after the response. Every WordPress HTTP function (and
 * spawn_cron) is a recorder here, so any call during the hook would show.
 */

use FormBridge\Outbox;
use FormBridge\Scheduler;

final class HookMakesNoHttpCallTest extends HookPathTestCase {
	public static function queuedCases(): array {
		return FormPluginMappingTest::queuedCases();
	}

	/** @dataProvider queuedCases */
	public function test_the_hook_writes_a_row_and_makes_no_http_call( string $name ): void {
		self::fire( self::cases()[ $name ] );

		$this->assertSame( array(), FormBridgeTestWorld::$httpCalls, 'no HTTP during the hook' );
		$rows = self::queuedRows();
		$this->assertCount( 1, $rows );
		$this->assertSame( Outbox::PENDING, $rows[0]['status'] );
		$this->assertMatchesRegularExpression( '/^msg_[0-9a-f]{32}$/', $rows[0]['webhook_id'] );
		$this->assertLessThanOrEqual( time(), $rows[0]['next_attempt_at'], 'due at once' );
	}

	public function test_sending_is_deferred_to_after_the_response(): void {
		self::fire( self::cases()['wpforms'] );

		$this->assertSame( array( Scheduler::NOW_HOOK ), array_column( FormBridgeTestWorld::$singleEvents, 1 ), 'a one-off cron event for now' );
		$shutdown = FormBridgeTestWorld::callbacks( 'shutdown' );
		$this->assertCount( 1, $shutdown, 'WP-Cron is spawned on shutdown' );
		$this->assertSame( array(), FormBridgeTestWorld::$httpCalls );

		do_action( 'shutdown' );
		$this->assertSame( array( array( 'spawn_cron', 'wp-cron.php' ) ), FormBridgeTestWorld::$httpCalls, 'only after the response' );
	}

	public function test_many_submissions_in_one_request_spawn_cron_once(): void {
		self::fire( self::cases()['wpforms'] );
		self::fire( self::cases()['custom'] );
		$this->assertCount( 2, self::queuedRows() );
		$this->assertCount( 1, FormBridgeTestWorld::callbacks( 'shutdown' ) );
	}

	public function test_two_submissions_get_different_webhook_ids(): void {
		self::fire( self::cases()['custom'] );
		self::fire( self::cases()['custom'] );
		$rows = self::queuedRows();
		$this->assertNotSame( $rows[0]['webhook_id'], $rows[1]['webhook_id'] );
		$this->assertSame( $rows[0]['body'], $rows[1]['body'], 'the body is a pure function of the submission' );
	}
}
