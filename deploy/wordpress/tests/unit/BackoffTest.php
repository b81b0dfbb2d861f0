<?php

use FormBridge\Backoff;
use PHPUnit\Framework\TestCase;

final class BackoffTest extends TestCase {
	public function test_the_schedule_doubles_from_30_seconds_and_caps_at_an_hour(): void {
		$schedule = array_map( array( Backoff::class, 'baseDelay' ), range( 1, 10 ) );
		$this->assertSame( array( 30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600 ), $schedule );
		$this->assertSame( 3600, Backoff::baseDelay( 500 ), 'no overflow for very many attempts' );
	}

	public function test_jitter_stays_within_20_percent_either_way(): void {
		foreach ( range( 1, 12 ) as $attempt ) {
			$base = Backoff::baseDelay( $attempt );
			$this->assertSame( $base, Backoff::delay( $attempt, 0.5 ) );
			$this->assertSame( (int) round( $base * 0.8 ), Backoff::delay( $attempt, 0.0 ) );
			$this->assertSame( (int) round( $base * 1.2 ), Backoff::delay( $attempt, 0.999999999 ) );
		}
	}

	public function test_jittered_delays_spread_out(): void {
		$delays = array();
		for ( $i = 0; $i < 200; $i++ ) {
			$delays[] = Backoff::delay( 8, mt_rand() / mt_getrandmax() );
		}
		$this->assertGreaterThan( 20, count( array_unique( $delays ) ) );
		$this->assertGreaterThanOrEqual( 2880, min( $delays ) );
		$this->assertLessThanOrEqual( 4320, max( $delays ) );
	}

	public function test_retries_go_on_for_at_least_24_hours(): void {
		// Fail every attempt with the fastest jitter and count how long retrying lasts.
		$start = 1_800_000_000;
		$now   = $start;
		$attempts = 1;
		while ( ! Backoff::exhausted( $start, $now ) ) {
			$now += Backoff::delay( $attempts, 0.0 );
			$attempts++;
			$this->assertLessThan( 500, $attempts, 'the schedule must end' );
		}
		$this->assertGreaterThanOrEqual( 24 * 3600, $now - $start );
		$this->assertGreaterThanOrEqual( Backoff::RETRY_WINDOW, $now - $start );
		$this->assertGreaterThan( 40, $attempts );
	}

	public function test_the_window_is_never_shorter_than_24_hours(): void {
		$this->assertFalse( Backoff::exhausted( 0, 23 * 3600, 3600 ), 'a 1 h window is raised to 24 h' );
		$this->assertTrue( Backoff::exhausted( 0, 24 * 3600, 3600 ) );
		$this->assertFalse( Backoff::exhausted( 0, 47 * 3600 ) );
		$this->assertTrue( Backoff::exhausted( 0, 48 * 3600 ) );
	}

	public function test_retry_after_in_seconds_or_as_a_date(): void {
		$now = 1_800_000_000;
		$this->assertSame( 5, Backoff::retryAfter( '5', $now ) );
		$this->assertSame( 120, Backoff::retryAfter( gmdate( 'D, d M Y H:i:s', $now + 120 ) . ' GMT', $now ) );
		$this->assertSame( 1, Backoff::retryAfter( '0', $now ), 'at least a second' );
		$this->assertSame( 1, Backoff::retryAfter( gmdate( 'D, d M Y H:i:s', $now - 60 ) . ' GMT', $now ), 'a date in the past' );
		$this->assertSame( Backoff::MAX_RETRY_AFTER, Backoff::retryAfter( '99999999', $now ) );
		$this->assertNull( Backoff::retryAfter( null, $now ) );
		$this->assertNull( Backoff::retryAfter( '', $now ) );
		$this->assertNull( Backoff::retryAfter( 'soon', $now ) );
	}
}
