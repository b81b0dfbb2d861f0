<?php
/**
 * An ordered map of field names to values in which every key is unique: a second field with the
 * same label becomes "Email (2)" instead of silently replacing the first.
 */

namespace FormBridge;

final class Fields {
	/** @var array<string, mixed> */
	private array $values = array();

	public function add( string $key, mixed $value ): void {
		$key    = self::cleanKey( $key );
		$unique = $key;
		for ( $n = 2; array_key_exists( $unique, $this->values ); $n++ ) {
			$unique = "$key ($n)";
		}
		$this->values[ $unique ] = $value;
	}

	/** @return array<string, mixed> */
	public function toArray(): array {
		return $this->values;
	}

	/** Labels may hold markup or line breaks; keys carry neither. */
	public static function cleanKey( string $key ): string {
		$key = trim( preg_replace( '/\s+/u', ' ', strip_tags( $key ) ) ?? '' );
		return '' === $key ? 'field' : $key;
	}
}
