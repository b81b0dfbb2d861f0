<?php
/**
 * When to try again after a retryable failure (5xx, timeout, network error, 429/503 without
 * Retry-After), and when to give up. Pure: the clock and the random source are parameters.
 *
 * Schedule: 30 s, then doubling (1, 2, 4, ... min) up to one hour between attempts, each delay
 * with ±20% jitter so that sites recovering from the same outage do not retry in step. Retries go
 * on for RETRY_WINDOW (48 h, never less than 24 h) from the first attempt or the last manual
 * retry; a failure after that marks the row failed, where it stays until someone retries it.
 */

namespace FormBridge;

final class Backoff {
	public const FIRST_DELAY      = 30;
	public const MAX_DELAY        = 3600;
	public const JITTER           = 0.2;
	public const RETRY_WINDOW     = 48 * 3600;
	public const MIN_RETRY_WINDOW = 24 * 3600;
	// Retry-After beyond this is taken as this: a row must not sleep for days on one answer.
	public const MAX_RETRY_AFTER = 6 * 3600;

	/**
	 * Seconds to wait after the given number of failed attempts (1 = the first attempt failed).
	 *
	 * @param float $random a number in [0, 1): 0.5 gives the exact schedule.
	 */
	public static function delay( int $failedAttempts, float $random ): int {
		$base   = self::baseDelay( $failedAttempts );
		$factor = 1 + self::JITTER * ( 2 * $random - 1 );
		return max( 1, (int) round( $base * $factor ) );
	}

	/** The delay before jitter. */
	public static function baseDelay( int $failedAttempts ): int {
		$doublings = min( max( $failedAttempts, 1 ) - 1, 20 );
		return (int) min( self::MAX_DELAY, self::FIRST_DELAY * ( 2 ** $doublings ) );
	}

	/** Whether a failure at $now, in a retry window that opened at $windowStart, is the last. */
	public static function exhausted( int $windowStart, int $now, int $window = self::RETRY_WINDOW ): bool {
		return $now - $windowStart >= max( $window, self::MIN_RETRY_WINDOW );
	}

	/**
	 * Seconds a `Retry-After` header asks for (delta-seconds or an HTTP date), clamped to
	 * [1, MAX_RETRY_AFTER]; null when absent or unreadable.
	 */
	public static function retryAfter( ?string $header, int $now ): ?int {
		$header = trim( (string) $header );
		if ( '' === $header ) {
			return null;
		}
		if ( ctype_digit( $header ) ) {
			$seconds = (int) $header;
		} else {
			$at = strtotime( $header );
			if ( false === $at ) {
				return null;
			}
			$seconds = $at - $now;
		}
		return min( max( $seconds, 1 ), self::MAX_RETRY_AFTER );
	}
}
