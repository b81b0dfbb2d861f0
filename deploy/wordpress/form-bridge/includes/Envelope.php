<?php
/**
 * Builds the body of `POST /v1/submissions` (schemas/submission-envelope.schema.json) and encodes
 * it once. The encoded bytes are what the outbox stores and what every attempt sends, so a retry
 * is byte-identical. Non-ASCII characters are \u-escaped: the stored body is plain ASCII and no
 * database character set can alter it. Pure.
 */

namespace FormBridge;

final class Envelope {
	public const PLUGIN_NAME    = 'form-bridge-wp';
	private const MAX_META_CHARS = 2048;
	private const FORM_ID_CHARS  = 64;

	/**
	 * @return array<string, mixed>
	 */
	public static function build( string $site, Submission $submission, bool $includeIp, string $pluginVersion ): array {
		$fields = array();
		foreach ( $submission->fields as $key => $value ) {
			$fields[ Fields::cleanKey( FieldValue::cleanText( (string) $key ) ) ] = FieldValue::normalize( $value );
		}
		return array(
			'site'         => $site,
			'form_id'      => self::formId( $submission->formId ),
			'fields'       => $fields,
			'submitted_at' => $submission->submittedAt->setTimezone( new \DateTimeZone( 'UTC' ) )->format( 'Y-m-d\TH:i:s\Z' ),
			'meta'         => self::meta( $submission, $includeIp, $pluginVersion ),
		);
	}

	/** The exact bytes to sign and send. */
	public static function encode( array $envelope ): string {
		$envelope['fields'] = self::asObject( $envelope['fields'] );
		$envelope['meta']   = (object) $envelope['meta'];
		return json_encode( $envelope, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE | JSON_THROW_ON_ERROR );
	}

	/** Form ids are 1-64 of A-Z a-z 0-9 . _ - ; anything else becomes "-". */
	public static function formId( string $formId ): string {
		$clean = preg_replace( '/[^A-Za-z0-9._-]+/', '-', $formId ) ?? '';
		$clean = substr( trim( $clean, '-' ), 0, self::FORM_ID_CHARS );
		return '' === $clean ? 'form' : $clean;
	}

	/** @return array<string, string> */
	private static function meta( Submission $submission, bool $includeIp, string $pluginVersion ): array {
		$meta = array(
			'page_url'       => $submission->pageUrl,
			'referrer'       => $submission->referrer,
			'user_agent'     => $submission->userAgent,
			'ip'             => $includeIp ? $submission->ip : null,
			'plugin'         => self::PLUGIN_NAME,
			'plugin_version' => $pluginVersion,
		);
		$meta = array_filter( $meta, static fn( $v ) => is_string( $v ) && '' !== $v );
		return array_map( static fn( string $v ) => mb_substr( FieldValue::cleanText( $v ), 0, self::MAX_META_CHARS ), $meta );
	}

	/** JSON objects for maps (even empty, or with numeric keys); lists stay arrays. */
	private static function asObject( array $fields ): object {
		$out = new \stdClass();
		foreach ( $fields as $key => $value ) {
			$out->{(string) $key} = is_array( $value ) && ! array_is_list( $value ) ? (object) $value : $value;
		}
		return $out;
	}
}
