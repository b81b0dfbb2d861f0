<?php
/**
 * Makes any value a form plugin hands over fit the envelope's shapes: a scalar, a list of
 * scalars (checkboxes), or one level of nested map whose values are scalars or lists (name and
 * address blocks). Anything deeper is kept, as a JSON string, rather than dropped. Control
 * characters that ingest refuses (all but tab, CR and LF) are removed; nothing else is changed,
 * so a value that breaks a limit is refused by ingest with a reason instead of being cut short.
 */

namespace FormBridge;

final class FieldValue {
	/** A top-level field value. */
	public static function normalize( mixed $value ): mixed {
		$value = self::plain( $value );
		if ( ! is_array( $value ) ) {
			return self::scalar( $value );
		}
		if ( array_is_list( $value ) ) {
			return self::listOf( $value );
		}
		$nested = array();
		foreach ( $value as $key => $inner ) {
			$nested[ Fields::cleanKey( self::cleanText( (string) $key ) ) ] = self::leaf( $inner );
		}
		return $nested;
	}

	/** A value inside a nested map or a list item's parent: a scalar or a list of scalars. */
	private static function leaf( mixed $value ): mixed {
		$value = self::plain( $value );
		if ( is_array( $value ) ) {
			return array_is_list( $value ) ? self::listOf( $value ) : self::json( $value );
		}
		return self::scalar( $value );
	}

	/** @param list<mixed> $items */
	private static function listOf( array $items ): array {
		return array_map(
			static function ( $item ) {
				$item = self::plain( $item );
				return is_array( $item ) ? self::json( $item ) : self::scalar( $item );
			},
			$items
		);
	}

	/** Objects become arrays or strings; dates become RFC 3339. */
	private static function plain( mixed $value ): mixed {
		if ( $value instanceof \DateTimeInterface ) {
			return $value->format( DATE_RFC3339 );
		}
		if ( $value instanceof \JsonSerializable ) {
			return self::plain( $value->jsonSerialize() );
		}
		if ( $value instanceof \Stringable ) {
			return (string) $value;
		}
		if ( is_object( $value ) ) {
			return get_object_vars( $value );
		}
		return $value;
	}

	private static function scalar( mixed $value ): string|int|float|bool|null {
		if ( is_string( $value ) ) {
			return self::cleanText( $value );
		}
		if ( is_float( $value ) && ! is_finite( $value ) ) {
			return (string) $value;
		}
		if ( is_int( $value ) || is_float( $value ) || is_bool( $value ) || null === $value ) {
			return $value;
		}
		return null;
	}

	private static function json( array $value ): string {
		return self::cleanText( (string) json_encode( $value, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE ) );
	}

	/** Removes C0 controls other than tab, LF and CR, DEL and C1 controls; repairs bad UTF-8. */
	public static function cleanText( string $text ): string {
		if ( ! mb_check_encoding( $text, 'UTF-8' ) ) {
			$text = mb_convert_encoding( $text, 'UTF-8', 'UTF-8' );
		}
		return preg_replace( '/[\x{0}-\x{8}\x{B}\x{C}\x{E}-\x{1F}\x{7F}-\x{9F}]/u', '', $text ) ?? '';
	}
}
