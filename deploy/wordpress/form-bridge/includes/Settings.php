<?php
/**
 * The plugin's options: the ingest endpoint, the site domain it signs for, whether to send the
 * visitor's IP, how long delivered rows are kept, and the signing secret, sealed (SecretBox)
 * and never shown again once saved.
 */

namespace FormBridge;

final class Settings {
	public const OPTION        = 'form_bridge_settings';
	public const SECRET_OPTION = 'form_bridge_secret';
	public const DEFAULT_PATH  = '/v1/submissions';
	public const DEFAULT_RETENTION_DAYS = 7;

	/** @return array{endpoint: string, site_domain: string, include_ip: bool, retention_days: int} */
	public static function all(): array {
		$stored = get_option( self::OPTION, array() );
		$stored = is_array( $stored ) ? $stored : array();
		return array(
			'endpoint'       => (string) ( $stored['endpoint'] ?? '' ),
			'site_domain'    => (string) ( $stored['site_domain'] ?? '' ),
			'include_ip'     => ! empty( $stored['include_ip'] ),
			'retention_days' => max( 1, (int) ( $stored['retention_days'] ?? self::DEFAULT_RETENTION_DAYS ) ),
		);
	}

	public static function endpoint(): string {
		return self::all()['endpoint'];
	}

	/** The domain registered with Form-Bridge; by default this site's host. */
	public static function siteDomain(): string {
		$domain = self::all()['site_domain'];
		if ( '' !== $domain ) {
			return $domain;
		}
		return (string) wp_parse_url( home_url(), PHP_URL_HOST );
	}

	public static function includeIp(): bool {
		return self::all()['include_ip'];
	}

	public static function retentionDays(): int {
		return self::all()['retention_days'];
	}

	/**
	 * Saves what the settings form sent. An empty secret keeps the stored one.
	 *
	 * @param array<string, mixed> $input
	 * @return list<string> problems to show; nothing is saved when there are any
	 */
	public static function save( array $input ): array {
		$endpoint = self::normalizeEndpoint( trim( (string) ( $input['endpoint'] ?? '' ) ) );
		$domain   = strtolower( trim( (string) ( $input['site_domain'] ?? '' ) ) );
		$secret   = trim( (string) ( $input['secret'] ?? '' ) );
		$problems = self::problems( $endpoint, $domain, $secret );
		if ( array() !== $problems ) {
			return $problems;
		}
		update_option(
			self::OPTION,
			array(
				'endpoint'       => $endpoint,
				'site_domain'    => $domain,
				'include_ip'     => ! empty( $input['include_ip'] ),
				'retention_days' => max( 1, min( 365, (int) ( $input['retention_days'] ?? self::DEFAULT_RETENTION_DAYS ) ) ),
			)
		);
		if ( '' !== $secret ) {
			self::storeSecret( $secret );
		}
		return array();
	}

	public static function storeSecret( string $secret ): void {
		update_option( self::SECRET_OPTION, self::box()->seal( trim( $secret ) ), false );
	}

	public static function hasSecret(): bool {
		return '' !== (string) get_option( self::SECRET_OPTION, '' );
	}

	/** The plain secret, for signing only; null when none is stored or it no longer opens. */
	public static function secret(): ?string {
		$sealed = (string) get_option( self::SECRET_OPTION, '' );
		return '' === $sealed ? null : self::box()->open( $sealed );
	}

	/** Why nothing can be sent right now, or null when sending can go ahead. */
	public static function sendingBlocker(): ?string {
		$endpoint = self::endpoint();
		if ( '' === $endpoint ) {
			return __( 'No endpoint is set.', 'form-bridge' );
		}
		if ( ! wp_http_validate_url( $endpoint ) ) {
			return __( 'WordPress refuses the endpoint as unsafe (wp_safe_remote_post allows only public hosts on ports 80, 443 and 8080).', 'form-bridge' );
		}
		if ( ! self::hasSecret() ) {
			return __( 'No signing secret is set.', 'form-bridge' );
		}
		if ( null === self::secret() ) {
			return __( 'The stored signing secret cannot be read (were the site\'s salts changed?). Enter it again.', 'form-bridge' );
		}
		return null;
	}

	public static function delete(): void {
		delete_option( self::OPTION );
		delete_option( self::SECRET_OPTION );
	}

	/** A bare origin gets the standard path; anything with a path is kept as typed. */
	private static function normalizeEndpoint( string $endpoint ): string {
		if ( '' === $endpoint ) {
			return '';
		}
		$path = (string) wp_parse_url( $endpoint, PHP_URL_PATH );
		return ( '' === $path || '/' === $path ) ? rtrim( $endpoint, '/' ) . self::DEFAULT_PATH : $endpoint;
	}

	/** @return list<string> */
	private static function problems( string $endpoint, string $domain, string $secret ): array {
		$problems = array();
		$scheme   = (string) wp_parse_url( $endpoint, PHP_URL_SCHEME );
		if ( '' !== $endpoint && ! in_array( $scheme, array( 'http', 'https' ), true ) ) {
			$problems[] = __( 'The endpoint must be an http(s) URL.', 'form-bridge' );
		}
		if ( '' !== $domain && ! preg_match( '/^[a-z0-9.-]+$/', $domain ) ) {
			$problems[] = __( 'The site domain must be a bare host name, such as shop.example.com.', 'form-bridge' );
		}
		if ( '' !== $secret && ! Signer::isValidSecret( $secret ) ) {
			$problems[] = __( 'The secret must be the whsec_ value printed when the site was added.', 'form-bridge' );
		}
		return $problems;
	}

	private static function box(): SecretBox {
		return SecretBox::fromSalts( wp_salt( 'auth' ) . wp_salt( 'secure_auth' ) );
	}
}
