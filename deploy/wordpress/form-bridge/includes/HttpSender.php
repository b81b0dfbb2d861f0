<?php
/**
 * One signed POST through `wp_safe_remote_post`, which refuses unsafe destinations. Redirects
 * are not followed: a signed POST is re-sent nowhere but the configured endpoint.
 */

namespace FormBridge;

final class HttpSender {
	public const TIMEOUT_SECONDS = 15;

	public function __construct( private readonly string $pluginVersion ) {}

	/** @param array<string, string> $headers */
	public function post( string $url, array $headers, string $body ): Reply {
		$response = wp_safe_remote_post(
			$url,
			array(
				'headers'     => $headers + array( 'Content-Type' => 'application/json' ),
				'body'        => $body,
				'timeout'     => self::TIMEOUT_SECONDS,
				'redirection' => 0,
				'user-agent'  => Envelope::PLUGIN_NAME . '/' . $this->pluginVersion,
			)
		);
		if ( is_wp_error( $response ) ) {
			return Reply::transportError( $response->get_error_message() );
		}
		return new Reply(
			(int) wp_remote_retrieve_response_code( $response ),
			(string) wp_remote_retrieve_body( $response ),
			self::header( $response, 'retry-after' ),
			self::header( $response, 'location' ),
		);
	}

	private static function header( array $response, string $name ): ?string {
		$value = wp_remote_retrieve_header( $response, $name );
		if ( is_array( $value ) ) {
			$value = reset( $value );
		}
		return is_string( $value ) && '' !== $value ? $value : null;
	}
}
