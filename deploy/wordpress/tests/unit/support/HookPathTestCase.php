<?php
/**
 * Fires fixture cases through the plugin's real hook callbacks (FormHooks → Intake → Outbox)
 * with the stand-in WordPress, and reads back the envelope that was queued.
 */

use FormBridge\Dispatcher;
use FormBridge\FormHooks;
use FormBridge\HttpSender;
use FormBridge\Intake;
use FormBridge\Outbox;
use FormBridge\Scheduler;
use FormBridge\Settings;
use PHPUnit\Framework\TestCase;

abstract class HookPathTestCase extends TestCase {
	protected const SITE = 'shop.example.com';

	protected function setUp(): void {
		FormBridgeTestWorld::reset();
		$request = require dirname( __DIR__, 2 ) . '/fixtures/request.php';
		$_SERVER['HTTP_USER_AGENT'] = $request['user_agent'];
		$_SERVER['HTTP_REFERER']    = $request['referrer'];
		$_SERVER['REMOTE_ADDR']     = $request['ip'];
		$_SERVER['REQUEST_URI']     = $request['uri'];
		$_SERVER['HTTP_HOST']       = self::SITE;
		update_option( Settings::OPTION, array( 'endpoint' => 'https://ingest.example.com/v1/submissions', 'site_domain' => self::SITE, 'include_ip' => true ) );
		$outbox    = new Outbox();
		$scheduler = new Scheduler( static fn() => ( new Dispatcher( $outbox, new HttpSender( 'test' ) ) )->run() );
		( new FormHooks( new Intake( $outbox, $scheduler, '9.9.9' ) ) )->register();
	}

	/** @return array<string, array<string, mixed>> */
	protected static function cases(): array {
		return require dirname( __DIR__, 2 ) . '/fixtures/cases.php';
	}

	protected static function fire( array $case ): void {
		if ( isset( $case['before'] ) ) {
			( $case['before'] )();
		}
		do_action( $case['hook'], ...$case['args'] );
	}

	/** @return list<array<string, mixed>> the rows written to the outbox table */
	protected static function queuedRows(): array {
		return $GLOBALS['wpdb']->inserted['wp_' . Outbox::TABLE] ?? array();
	}

	/** The one envelope queued, decoded. */
	protected function queuedEnvelope(): array {
		$rows = self::queuedRows();
		$this->assertCount( 1, $rows, 'exactly one outbox row' );
		return json_decode( $rows[0]['body'], true, 512, JSON_THROW_ON_ERROR );
	}

	/** Asserts an envelope holds what a fixture case expects. */
	protected function assertEnvelopeMatches( array $expected, array $envelope ): void {
		$this->assertSame( self::SITE, $envelope['site'] );
		$this->assertSame( $expected['form_id'], $envelope['form_id'] );
		$this->assertEquals( $expected['fields'], $envelope['fields'] );
		if ( null === $expected['submitted_at'] ) {
			$age = time() - strtotime( $envelope['submitted_at'] );
			$this->assertTrue( $age >= 0 && $age < 300, 'submitted_at is the moment of the hook' );
		} else {
			$this->assertSame( $expected['submitted_at'], $envelope['submitted_at'] );
		}
		foreach ( $expected['meta'] as $key => $value ) {
			$this->assertSame( $value, $envelope['meta'][ $key ] ?? null, "meta.$key" );
		}
		$this->assertSame( 'form-bridge-wp', $envelope['meta']['plugin'] );
		$this->assertSame( '9.9.9', $envelope['meta']['plugin_version'] );
	}
}
