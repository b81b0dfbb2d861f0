<?php
/**
 * Standard Webhooks signing: `v1,` + base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>")).
 *
 * The key is the base64-decoded part of the site's `whsec_` secret. Pure: no WordPress, no I/O.
 * It must never log or return the key.
 */

namespace FormBridge;

final class Signer {
	private const PREFIX    = 'whsec_';
	private const MIN_BYTES = 24;
	private const MAX_BYTES = 64;

	private function __construct( private readonly string $key ) {}

	/**
	 * @throws \InvalidArgumentException when the secret is not `whsec_` + base64 of 24-64 bytes.
	 */
	public static function fromSecret( string $secret ): self {
		return new self( self::decodeSecret( $secret ) );
	}

	public static function isValidSecret( string $secret ): bool {
		try {
			self::decodeSecret( $secret );
			return true;
		} catch ( \InvalidArgumentException ) {
			return false;
		}
	}

	public function sign( string $webhookId, int $timestamp, string $body ): string {
		$content = $webhookId . '.' . $timestamp . '.' . $body;
		return 'v1,' . base64_encode( hash_hmac( 'sha256', $content, $this->key, true ) );
	}

	/**
	 * The three Standard Webhooks headers for one attempt. The id and body are fixed per
	 * submission; only the timestamp (and so the signature) changes between attempts.
	 *
	 * @return array<string, string>
	 */
	public function headers( string $webhookId, int $timestamp, string $body ): array {
		return array(
			'webhook-id'        => $webhookId,
			'webhook-timestamp' => (string) $timestamp,
			'webhook-signature' => $this->sign( $webhookId, $timestamp, $body ),
		);
	}

	private static function decodeSecret( string $secret ): string {
		$secret = trim( $secret );
		if ( ! str_starts_with( $secret, self::PREFIX ) ) {
			throw new \InvalidArgumentException( 'the secret must start with whsec_' );
		}
		$key = base64_decode( substr( $secret, strlen( self::PREFIX ) ), true );
		if ( false === $key || strlen( $key ) < self::MIN_BYTES || strlen( $key ) > self::MAX_BYTES ) {
			throw new \InvalidArgumentException( 'the secret must be whsec_ followed by base64 of 24 to 64 bytes' );
		}
		return $key;
	}
}
