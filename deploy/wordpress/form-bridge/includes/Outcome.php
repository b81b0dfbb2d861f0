<?php
/**
 * The decision for one attempt's reply. Pure.
 *
 *   2xx                              done (the answer's submission_id is kept)
 *   429, 503                         retry when Retry-After says (else the backoff schedule)
 *   408, other 5xx, network errors   retry on the backoff schedule
 *   3xx                              failed: the endpoint moved; a signed POST is not re-sent elsewhere
 *   other 4xx                        failed at once, with the answer's error code and message
 */

namespace FormBridge;

final class Outcome {
	private const MAX_ERROR_CHARS = 500;

	private function __construct(
		public readonly Verdict $verdict,
		public readonly int $status,
		public readonly string $error = '',
		public readonly ?int $retryAfter = null,
		public readonly ?string $submissionId = null,
	) {}

	public static function fromReply( Reply $reply, int $now ): self {
		if ( null !== $reply->transportError ) {
			return new self( Verdict::Retry, 0, self::clip( 'network error: ' . $reply->transportError ) );
		}
		$status = $reply->status;
		if ( $status >= 200 && $status < 300 ) {
			return new self( Verdict::Done, $status, '', null, self::submissionId( $reply->body ) );
		}
		if ( 429 === $status || 503 === $status ) {
			$wait = Backoff::retryAfter( $reply->retryAfter, $now );
			return new self( Verdict::Retry, $status, self::describe( $reply ), $wait );
		}
		if ( 408 === $status || $status >= 500 ) {
			return new self( Verdict::Retry, $status, self::describe( $reply ) );
		}
		if ( $status >= 300 && $status < 400 ) {
			$where = $reply->location ? ' to ' . $reply->location : '';
			return new self( Verdict::Failed, $status, self::clip( "HTTP $status: the endpoint redirects$where; set the endpoint to the final URL" ) );
		}
		return new self( Verdict::Failed, $status, self::describe( $reply ) );
	}

	/** "422 invalid_submission: fields.tags has more than 100 items", or the status and a body excerpt. */
	private static function describe( Reply $reply ): string {
		$decoded = json_decode( $reply->body, true );
		$error   = is_array( $decoded ) && is_array( $decoded['error'] ?? null ) ? $decoded['error'] : null;
		if ( null !== $error && is_string( $error['code'] ?? null ) ) {
			$message = is_string( $error['message'] ?? null ) ? ': ' . $error['message'] : '';
			return self::clip( $reply->status . ' ' . $error['code'] . $message );
		}
		$excerpt = trim( preg_replace( '/\s+/', ' ', strip_tags( $reply->body ) ) ?? '' );
		return self::clip( 'HTTP ' . $reply->status . ( '' === $excerpt ? '' : ': ' . $excerpt ) );
	}

	private static function submissionId( string $body ): ?string {
		$decoded = json_decode( $body, true );
		$id      = is_array( $decoded ) ? ( $decoded['submission_id'] ?? null ) : null;
		return is_string( $id ) ? substr( $id, 0, 64 ) : null;
	}

	private static function clip( string $text ): string {
		return mb_substr( $text, 0, self::MAX_ERROR_CHARS );
	}
}
