<?php
/**
 * Reads a property from what form plugins pass around: arrays, plain objects, and objects that
 * are both (Gravity Forms' GF_Field implements ArrayAccess over its properties).
 */

namespace FormBridge\Mapping;

final class Props {
	public static function get( mixed $thing, string $name, mixed $default = null ): mixed {
		if ( is_array( $thing ) ) {
			return $thing[ $name ] ?? $default;
		}
		if ( $thing instanceof \ArrayAccess && isset( $thing[ $name ] ) ) {
			return $thing[ $name ];
		}
		if ( is_object( $thing ) && isset( $thing->{$name} ) ) {
			return $thing->{$name};
		}
		return $default;
	}

	public static function string( mixed $thing, string $name ): string {
		$value = self::get( $thing, $name, '' );
		return is_scalar( $value ) ? (string) $value : '';
	}

	/** A UTC time from "Y-m-d H:i:s" (as form plugins store it in UTC), a Unix time, or now. */
	public static function utcTime( mixed $value, \DateTimeImmutable $fallback ): \DateTimeImmutable {
		$utc = new \DateTimeZone( 'UTC' );
		if ( is_int( $value ) || ( is_string( $value ) && ctype_digit( $value ) ) ) {
			return ( new \DateTimeImmutable( '@' . $value ) )->setTimezone( $utc );
		}
		if ( $value instanceof \DateTimeInterface ) {
			return \DateTimeImmutable::createFromInterface( $value )->setTimezone( $utc );
		}
		if ( is_string( $value ) && '' !== $value ) {
			try {
				return ( new \DateTimeImmutable( $value, $utc ) )->setTimezone( $utc );
			} catch ( \Exception ) {
				return $fallback;
			}
		}
		return $fallback;
	}
}
