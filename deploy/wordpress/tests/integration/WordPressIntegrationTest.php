<?php
/**
 * Form-Bridge in a real WordPress (Debian's package, served by `php -S`) against the real
 * formbridge-ingest and persister on the local engine. deploy/wordpress/test.sh starts all of it
 * and passes its addresses in FB_IT_* variables.
 *
 * The form plugins cannot be installed here, so the harness mu-plugin fires their hooks with the
 * fixtures' documented argument shapes inside real admin-ajax.php requests. Nothing else pushes
 * rows out: the plugin's own after-response spawn of WP-Cron sends them, and wp-cron.php
 * requests (what a system cron does) drive the every-minute job.
 *
 * The tests run in order and share one outbox and one tenant.
 */

use PHPUnit\Framework\TestCase;

final class WordPressIntegrationTest extends TestCase {
	private const WAIT_SECONDS = 30;

	private static array $env = array();

	public static function setUpBeforeClass(): void {
		foreach ( array( 'FB_IT_WP_URL', 'FB_IT_TOKEN', 'FB_IT_ADMIN', 'FB_IT_TENANT', 'FB_IT_SITE', 'FB_IT_INGEST_CTL', 'FB_IT_SECRET_FILE' ) as $name ) {
			$value = getenv( $name );
			if ( false === $value || '' === $value ) {
				throw new RuntimeException( "$name is not set: run deploy/wordpress/test.sh" );
			}
			self::$env[ $name ] = $value;
		}
	}

	public function test_wordpress_serves_the_plugin_and_sending_is_configured(): void {
		$status = self::harness( 'status' );
		$this->assertNull( $status['blocker'], 'nothing blocks sending' );
		$this->assertIsInt( $status['cron'], 'the every-minute job is scheduled' );
	}

	/** @depends test_wordpress_serves_the_plugin_and_sending_is_configured */
	public function test_the_settings_test_button_gets_ingests_real_answer(): void {
		$answer = self::harness( 'test_send' );
		$this->assertSame( 202, $answer['status'], (string) json_encode( $answer ) );
		$this->assertSame( 'done', $answer['verdict'] );
		$this->assertMatchesRegularExpression( '/"submission_id":"[0-9A-Z]{26}"/', $answer['body'] );
	}

	public static function deliveredCases(): array {
		$cases = array();
		foreach ( self::cases() as $name => $case ) {
			if ( null !== $case['expected'] && ! isset( $case['ingest_refuses'] ) ) {
				$cases[ $name ] = array( $name );
			}
		}
		return $cases;
	}

	/**
	 * @dataProvider deliveredCases
	 * @depends test_wordpress_serves_the_plugin_and_sending_is_configured
	 */
	public function test_each_form_plugins_submission_arrives_in_dynamodb( string $name ): void {
		$expected = self::cases()[ $name ]['expected'];
		$rowId    = $this->fireOne( $name );

		$row  = $this->waitForRow( $rowId, 'done' );
		$item = $this->storedSubmission( $row['submission_id'] );

		$this->assertSame( self::$env['FB_IT_TENANT'], $item['tenant_id'] );
		$this->assertSame( self::$env['FB_IT_SITE'], $item['site'] );
		$this->assertSame( $expected['form_id'], $item['form_id'] );
		$this->assertEquals( $expected['fields'], $item['payload']['fields'] );
		if ( null !== $expected['submitted_at'] ) {
			$this->assertSame( $expected['submitted_at'], $item['payload']['submitted_at'] );
		}
		$request = require dirname( __DIR__ ) . '/fixtures/request.php';
		foreach ( $expected['meta'] as $key => $value ) {
			// The visitor's address is the real request's here: the test client on 127.0.0.1.
			$value = ( 'ip' === $key && $request['ip'] === $value ) ? '127.0.0.1' : $value;
			$this->assertSame( $value, $item['payload']['meta'][ $key ] ?? null, "meta.$key" );
		}
		$this->assertSame( 'form-bridge-wp', $item['payload']['meta']['plugin'] );
	}

	/** @depends test_wordpress_serves_the_plugin_and_sending_is_configured */
	public function test_gravity_forms_spam_is_not_queued(): void {
		$fired = self::harness( 'fire', array( 'case' => 'gravityforms-spam' ) );
		$this->assertSame( array(), $fired['rows'] );
		$this->assertSame( 0, $fired['http_calls'] );
	}

	/** @depends test_wordpress_serves_the_plugin_and_sending_is_configured */
	public function test_with_ingest_down_submissions_wait_and_then_arrive_exactly_once(): void {
		$storedBefore = $this->storedIds();
		self::ingest( 'stop' );
		try {
			$rowIds = array_map( fn( $name ) => $this->fireOne( $name ), array( 'gravityforms', 'wpforms', 'fluentforms' ) );

			// The after-response attempt meets a closed port and backs off.
			$first = $this->waitUntil(
				static function () use ( $rowIds ) {
					$row = self::rows( $rowIds )[ $rowIds[0] ];
					return $row['attempts'] >= 1 ? $row : null;
				},
				'a first attempt'
			);
			$this->assertSame( 'pending', $first['status'] );
			$this->assertSame( 0, $first['last_status'], 'no HTTP answer while ingest is down' );
			$this->assertStringContainsString( 'network error', $first['last_error'] );
			$this->assertGreaterThan( 0, $first['next_in'], 'backing off' );

			// Time passes and the cron job runs while ingest is still down: everything waits.
			self::harness( 'advance' );
			self::runCron();
			$waiting = self::rows( $rowIds );
			foreach ( $waiting as $row ) {
				$this->assertSame( 'pending', $row['status'], 'waiting in the outbox' );
				$this->assertSame( '', $row['submission_id'] );
			}
			$this->assertSame( $storedBefore, $this->storedIds(), 'nothing reached DynamoDB' );
			$bodies = array_column( $waiting, 'body_sha256', 'webhook_id' );
		} finally {
			self::ingest( 'start' );
		}

		self::harness( 'advance' );
		self::runCron();
		$delivered = array();
		foreach ( $rowIds as $rowId ) {
			$delivered[ $rowId ] = $this->waitForRow( $rowId, 'done', true );
		}
		$this->assertSame( $bodies, array_column( $delivered, 'body_sha256', 'webhook_id' ), 'same webhook-ids, byte-identical bodies' );

		$submissionIds = array_column( $delivered, 'submission_id' );
		$this->assertCount( 3, array_unique( $submissionIds ) );
		foreach ( $submissionIds as $id ) {
			$this->storedSubmission( $id );
		}
		$stored = $this->storedIds();
		$this->assertSame( count( $storedBefore ) + 3, count( $stored ), 'each arrived exactly once' );
		$this->assertSame( count( $stored ), count( array_unique( $stored ) ) );

		// A retry after a lost answer is byte-identical: ingest gives the same id, and nothing new is stored.
		self::harness( 'resend', array( 'ids' => (string) $rowIds[0] ) );
		self::runCron();
		$again = $this->waitForRow( $rowIds[0], 'done', true, fn( $row ) => $row['attempts'] > $delivered[ $rowIds[0] ]['attempts'] );
		$this->assertSame( $delivered[ $rowIds[0] ]['submission_id'], $again['submission_id'], 'the same submission id' );
		sleep( 2 ); // let the persister write whatever it received
		$this->assertSame( $stored, $this->storedIds(), 'still exactly once' );
	}

	/** @depends test_wordpress_serves_the_plugin_and_sending_is_configured */
	public function test_a_422_is_failed_with_its_reason_and_never_retried(): int {
		$rowId = $this->fireOne( 'custom-too-many-topics' );
		$row   = $this->waitForRow( $rowId, 'failed' );
		$this->assertSame( 422, $row['last_status'] );
		$this->assertStringContainsString( 'invalid_submission', $row['last_error'] );
		$this->assertStringContainsString( self::cases()['custom-too-many-topics']['ingest_refuses'], $row['last_error'], 'the reason names the field' );
		$this->assertSame( 1, $row['attempts'] );

		self::harness( 'advance' );
		self::runCron();
		sleep( 1 );
		$later = self::rows( array( $rowId ) )[ $rowId ];
		$this->assertSame( 'failed', $later['status'] );
		$this->assertSame( 1, $later['attempts'], 'never retried' );
		return $rowId;
	}

	/** @depends test_a_422_is_failed_with_its_reason_and_never_retried */
	public function test_the_settings_page_shows_failed_rows_and_never_the_secret( int $failedRowId ): void {
		$html   = self::harness( 'page' )['html'];
		$secret = trim( (string) file_get_contents( self::$env['FB_IT_SECRET_FILE'] ) );
		$this->assertStringContainsString( 'A secret is stored', $html );
		$this->assertStringNotContainsString( $secret, $html );
		$this->assertStringNotContainsString( substr( $secret, 6, 12 ), $html, 'not even part of it' );
		$this->assertStringContainsString( 'name="rows[]" value="' . $failedRowId . '"', $html, 'the failed row, selectable for bulk retry' );
		$this->assertStringContainsString( 'fields.topics has more than 100 items', $html, 'with its reason' );
		$this->assertMatchesRegularExpression( '/Received \d+, delivered \d+, failed [1-9]\d*\./', $html, 'the last 24 hours' );
		$this->assertStringContainsString( 'Send test submission', $html );
	}

	/** @depends test_a_422_is_failed_with_its_reason_and_never_retried */
	public function test_a_bulk_retry_sends_a_failed_row_again( int $failedRowId ): void {
		$this->assertSame( 1, self::harness( 'retry', array( 'ids' => (string) $failedRowId ) )['retried'] );
		self::runCron();
		$row = $this->waitForRow( $failedRowId, 'failed', true, fn( $row ) => 2 === $row['attempts'] );
		$this->assertSame( 422, $row['last_status'], 'ingest refuses it again, as it should' );
	}

	/** Last: uninstalling removes the table, the options and the job. */
	public function test_uninstalling_removes_everything_the_plugin_stored(): void {
		$left = self::harness( 'uninstall' );
		$this->assertFalse( $left['active'] );
		$this->assertNull( $left['table_left'], 'the outbox table is dropped' );
		$this->assertSame( array(), $left['options_left'], 'no form_bridge options remain' );
		$this->assertFalse( $left['cron_left'], 'no job remains' );
	}

	// --- helpers ------------------------------------------------------------------------------

	private static function cases(): array {
		return require dirname( __DIR__ ) . '/fixtures/cases.php';
	}

	/** Fires one case; the hook must write exactly one row and make no HTTP call. */
	private function fireOne( string $name ): int {
		$fired = self::harness( 'fire', array( 'case' => $name ) );
		$this->assertSame( 0, $fired['http_calls'] ?? null, "the $name hook made no HTTP call" );
		$this->assertCount( 1, $fired['rows'] ?? array(), "the $name hook wrote one outbox row" );
		return $fired['rows'][0];
	}

	/**
	 * Waits for a row to reach a status (and an extra condition). With $timePasses, each poll
	 * also makes due what is waiting and requests wp-cron.php, as a system cron would.
	 */
	private function waitForRow( int $rowId, string $status, bool $timePasses = false, ?Closure $also = null ): array {
		return $this->waitUntil(
			static function () use ( $rowId, $status, $timePasses, $also ) {
				$row = self::rows( array( $rowId ) )[ $rowId ];
				if ( $row['status'] === $status && ( null === $also || $also( $row ) ) ) {
					return $row;
				}
				if ( $timePasses ) {
					self::harness( 'advance' );
					self::runCron();
				}
				return null;
			},
			"row $rowId to be $status"
		);
	}

	/** The stored submission, once the persister has written it. */
	private function storedSubmission( string $submissionId ): array {
		$this->assertMatchesRegularExpression( '/^[0-9A-Z]{26}$/', $submissionId );
		return $this->waitUntil(
			function () use ( $submissionId ) {
				[ $code, $out ] = self::admin( array( 'submissions', 'get', '--tenant', self::$env['FB_IT_TENANT'], '--id', $submissionId ) );
				$item = 0 === $code ? json_decode( $out, true ) : null;
				$item = $item['submission'] ?? $item;
				return is_array( $item ) && ( $item['submission_id'] ?? null ) === $submissionId ? $item : null;
			},
			"submission $submissionId in DynamoDB"
		);
	}

	/** @return list<string> every stored submission id of the tenant */
	private function storedIds(): array {
		[ $code, $out ] = self::admin( array( 'submissions', 'list', '--tenant', self::$env['FB_IT_TENANT'], '--limit', '500' ) );
		$this->assertSame( 0, $code, $out );
		$ids = array_column( json_decode( $out, true )['submissions'] ?? array(), 'submission_id' );
		sort( $ids );
		return $ids;
	}

	private function waitUntil( Closure $probe, string $what ): mixed {
		$deadline = microtime( true ) + self::WAIT_SECONDS;
		do {
			$result = $probe();
			if ( null !== $result ) {
				return $result;
			}
			usleep( 250_000 );
		} while ( microtime( true ) < $deadline );
		$this->fail( "timed out waiting for $what" );
	}

	private static function rows( array $ids ): array {
		return self::harness( 'rows', array( 'ids' => implode( ',', $ids ) ) )['rows'];
	}

	private static function harness( string $op, array $params = array() ): array {
		$request = require dirname( __DIR__ ) . '/fixtures/request.php';
		$query   = http_build_query( array( 'action' => 'form_bridge_it', 'op' => $op, 'token' => self::$env['FB_IT_TOKEN'] ) + $params );
		[ $status, $body ] = self::get( self::$env['FB_IT_WP_URL'] . '/wp-admin/admin-ajax.php?' . $query, array( 'User-Agent: ' . $request['user_agent'], 'Referer: ' . $request['referrer'] ) );
		$decoded = json_decode( $body, true );
		if ( 200 !== $status || ! is_array( $decoded ) || isset( $decoded['error'] ) ) {
			throw new RuntimeException( "harness $op answered $status: " . substr( $body, 0, 500 ) );
		}
		return $decoded;
	}

	/** What a system cron does every minute. */
	private static function runCron(): void {
		self::get( self::$env['FB_IT_WP_URL'] . '/wp-cron.php' );
	}

	private static function get( string $url, array $headers = array() ): array {
		$curl = curl_init( $url );
		curl_setopt_array( $curl, array( CURLOPT_RETURNTRANSFER => true, CURLOPT_TIMEOUT => 60, CURLOPT_HTTPHEADER => $headers ) );
		$body = curl_exec( $curl );
		$code = (int) curl_getinfo( $curl, CURLINFO_RESPONSE_CODE );
		curl_close( $curl );
		return array( $code, is_string( $body ) ? $body : '' );
	}

	private static function admin( array $args ): array {
		exec( escapeshellarg( self::$env['FB_IT_ADMIN'] ) . ' ' . implode( ' ', array_map( 'escapeshellarg', $args ) ) . ' 2>&1', $lines, $code );
		return array( $code, implode( "\n", $lines ) );
	}

	private static function ingest( string $command ): void {
		exec( escapeshellarg( self::$env['FB_IT_INGEST_CTL'] ) . ' ' . escapeshellarg( $command ) . ' 2>&1', $lines, $code );
		if ( 0 !== $code ) {
			throw new RuntimeException( "ingest $command failed: " . implode( "\n", $lines ) );
		}
	}
}
