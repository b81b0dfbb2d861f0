<?php

use FormBridge\Outcome;
use FormBridge\Reply;
use FormBridge\Verdict;
use PHPUnit\Framework\TestCase;

final class OutcomeTest extends TestCase {
	private const NOW = 1_800_000_000;

	private static function error( string $code, string $message ): string {
		return json_encode( array( 'error' => array( 'code' => $code, 'message' => $message ) ) );
	}

	public function test_202_is_done_and_keeps_the_submission_id(): void {
		$outcome = Outcome::fromReply( new Reply( 202, '{"status":"queued","submission_id":"01M88VFZ00SX3K3JQ1A5GK3WR3"}' ), self::NOW );
		$this->assertSame( Verdict::Done, $outcome->verdict );
		$this->assertSame( '01M88VFZ00SX3K3JQ1A5GK3WR3', $outcome->submissionId );
	}

	public function test_429_and_503_wait_as_retry_after_says(): void {
		$limited = Outcome::fromReply( new Reply( 429, self::error( 'rate_limited', 'this tenant is over its submission rate' ), '7' ), self::NOW );
		$this->assertSame( Verdict::Retry, $limited->verdict );
		$this->assertSame( 7, $limited->retryAfter );
		$this->assertSame( '429 rate_limited: this tenant is over its submission rate', $limited->error );

		$unavailable = Outcome::fromReply( new Reply( 503, self::error( 'queue_unavailable', 'the submission could not be queued' ), '5' ), self::NOW );
		$this->assertSame( Verdict::Retry, $unavailable->verdict );
		$this->assertSame( 5, $unavailable->retryAfter );
	}

	public function test_429_without_retry_after_falls_back_to_the_schedule(): void {
		$this->assertNull( Outcome::fromReply( new Reply( 429 ), self::NOW )->retryAfter );
	}

	/** @dataProvider retryable */
	public function test_server_errors_timeouts_and_network_errors_are_retried( Reply $reply, string $error ): void {
		$outcome = Outcome::fromReply( $reply, self::NOW );
		$this->assertSame( Verdict::Retry, $outcome->verdict );
		$this->assertNull( $outcome->retryAfter );
		$this->assertStringContainsString( $error, $outcome->error );
	}

	public static function retryable(): array {
		return array(
			'500'               => array( new Reply( 500, '<html><body><h1>Internal Server Error</h1></body></html>' ), 'HTTP 500: Internal Server Error' ),
			'502'               => array( new Reply( 502, '' ), 'HTTP 502' ),
			'504'               => array( new Reply( 504, 'upstream timed out' ), 'HTTP 504' ),
			'408'               => array( new Reply( 408, '' ), 'HTTP 408' ),
			'connection refused' => array( Reply::transportError( 'cURL error 7: Failed to connect to 127.0.0.1 port 8080: Connection refused' ), 'Connection refused' ),
			'timeout'           => array( Reply::transportError( 'cURL error 28: Operation timed out after 15001 milliseconds' ), 'timed out' ),
		);
	}

	public function test_a_422_fails_at_once_and_names_the_field(): void {
		$outcome = Outcome::fromReply( new Reply( 422, self::error( 'invalid_submission', 'fields.topics has more than 100 items' ) ), self::NOW );
		$this->assertSame( Verdict::Failed, $outcome->verdict );
		$this->assertSame( 422, $outcome->status );
		$this->assertSame( '422 invalid_submission: fields.topics has more than 100 items', $outcome->error );
	}

	/** @dataProvider otherClientErrors */
	public function test_other_4xx_fail_at_once_with_their_code( int $status, string $code ): void {
		$outcome = Outcome::fromReply( new Reply( $status, self::error( $code, 'explained' ) ), self::NOW );
		$this->assertSame( Verdict::Failed, $outcome->verdict );
		$this->assertStringStartsWith( "$status $code", $outcome->error );
	}

	public static function otherClientErrors(): array {
		return array(
			array( 400, 'malformed_json' ),
			array( 401, 'invalid_signature' ),
			array( 401, 'timestamp_out_of_tolerance' ),
			array( 404, 'not_found' ),
			array( 413, 'payload_too_large' ),
			array( 415, 'unsupported_media_type' ),
		);
	}

	public function test_a_redirect_fails_and_says_where_to(): void {
		$outcome = Outcome::fromReply( new Reply( 301, '', null, 'https://ingest.example.com/v2/submissions' ), self::NOW );
		$this->assertSame( Verdict::Failed, $outcome->verdict );
		$this->assertStringContainsString( 'https://ingest.example.com/v2/submissions', $outcome->error );
	}

	public function test_long_answers_are_clipped(): void {
		$outcome = Outcome::fromReply( new Reply( 500, str_repeat( 'x', 5000 ) ), self::NOW );
		$this->assertLessThanOrEqual( 500, mb_strlen( $outcome->error ) );
	}
}
