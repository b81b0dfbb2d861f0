<?php
/**
 * Seals the site's signing secret for storage in the options table: libsodium secretbox
 * (XSalsa20-Poly1305) under a key derived from the site's salts, so a copy of the database
 * alone does not reveal the secret. If the salts change, the sealed secret no longer opens and
 * the owner enters it again. Pure: the salts are given, nothing is read from WordPress here.
 */

namespace FormBridge;

final class SecretBox {
	private const VERSION = 'fbs1:';
	// Keyed BLAKE2b context: a different purpose of the same salts gets a different key.
	private const CONTEXT = 'form-bridge/signing-secret/v1';

	private function __construct( private readonly string $key ) {}

	public static function fromSalts( string $salts ): self {
		return new self( sodium_crypto_generichash( $salts, self::CONTEXT, SODIUM_CRYPTO_SECRETBOX_KEYBYTES ) );
	}

	public function seal( string $plain ): string {
		$nonce = random_bytes( SODIUM_CRYPTO_SECRETBOX_NONCEBYTES );
		return self::VERSION . base64_encode( $nonce . sodium_crypto_secretbox( $plain, $nonce, $this->key ) );
	}

	/** The plain secret, or null when the sealed value is damaged or was sealed under other salts. */
	public function open( string $sealed ): ?string {
		if ( ! str_starts_with( $sealed, self::VERSION ) ) {
			return null;
		}
		$raw = base64_decode( substr( $sealed, strlen( self::VERSION ) ), true );
		if ( false === $raw || strlen( $raw ) <= SODIUM_CRYPTO_SECRETBOX_NONCEBYTES ) {
			return null;
		}
		$nonce  = substr( $raw, 0, SODIUM_CRYPTO_SECRETBOX_NONCEBYTES );
		$cipher = substr( $raw, SODIUM_CRYPTO_SECRETBOX_NONCEBYTES );
		$plain  = sodium_crypto_secretbox_open( $cipher, $nonce, $this->key );
		return false === $plain ? null : $plain;
	}
}
