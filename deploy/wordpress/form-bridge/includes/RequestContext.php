<?php
/**
 * What the current HTTP request tells about a submission, for form plugins whose hooks do not
 * carry it (WPForms, Fluent Forms, custom forms): page URL, referrer, user agent, client IP and
 * the time. Tests build it directly.
 */

namespace FormBridge;

final class RequestContext {
	public function __construct(
		public readonly \DateTimeImmutable $now,
		public readonly ?string $pageUrl = null,
		public readonly ?string $referrer = null,
		public readonly ?string $userAgent = null,
		public readonly ?string $ip = null,
	) {}

	/** @param array<string, mixed> $server usually $_SERVER */
	public static function fromServer( array $server ): self {
		$referrer = self::text( $server['HTTP_REFERER'] ?? null );
		return new self(
			new \DateTimeImmutable( 'now', new \DateTimeZone( 'UTC' ) ),
			self::pageUrl( $server, $referrer ),
			$referrer,
			self::text( $server['HTTP_USER_AGENT'] ?? null ),
			self::text( $server['REMOTE_ADDR'] ?? null ),
		);
	}

	/**
	 * Forms that post through AJAX or REST are on the page that made the request (the
	 * referrer); forms that post to their own page are at the request URL.
	 */
	private static function pageUrl( array $server, ?string $referrer ): ?string {
		$uri = (string) ( $server['REQUEST_URI'] ?? '' );
		$host = self::text( $server['HTTP_HOST'] ?? null );
		$background = str_contains( $uri, 'admin-ajax.php' ) || str_contains( $uri, '/wp-json/' ) || str_contains( $uri, 'rest_route=' );
		if ( $background || null === $host || '' === $uri ) {
			return $referrer;
		}
		$scheme = ( ! empty( $server['HTTPS'] ) && 'off' !== $server['HTTPS'] ) ? 'https' : 'http';
		return $scheme . '://' . $host . $uri;
	}

	private static function text( mixed $value ): ?string {
		return is_string( $value ) && '' !== $value ? $value : null;
	}
}
