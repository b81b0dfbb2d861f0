<?php
/**
 * Gravity Forms: `gform_after_submission( array $entry, array $form )`.
 *
 * Keys are field labels (the admin label, then "Field <id>", when a label is empty). Entry
 * values are keyed by field id; multi-input fields use "<field>.<input>" keys. Name and address
 * fields become nested objects with stable keys, checkboxes a list of the checked choices,
 * multi-selects a list, consent a boolean. Layout fields carry no value and are left out.
 * `submitted_at` is the entry's `date_created` (UTC). Spam entries are never sent.
 */

namespace FormBridge\Mapping;

use FormBridge\Fields;
use FormBridge\RequestContext;
use FormBridge\Submission;

final class GravityForms {
	public const SOURCE = 'gravityforms';

	private const LAYOUT_TYPES = array( 'html', 'section', 'page', 'captcha', 'honeypot' );
	private const NAME_INPUTS  = array( '2' => 'prefix', '3' => 'first', '4' => 'middle', '6' => 'last', '8' => 'suffix' );
	private const ADDRESS_INPUTS = array( '1' => 'line1', '2' => 'line2', '3' => 'city', '4' => 'state', '5' => 'postcode', '6' => 'country' );

	public static function isSpam( array $entry ): bool {
		return 'spam' === ( $entry['status'] ?? '' );
	}

	public static function map( array $entry, array|object $form, RequestContext $context ): Submission {
		$fields = new Fields();
		foreach ( (array) Props::get( $form, 'fields', array() ) as $field ) {
			$type = self::inputType( $field );
			if ( in_array( $type, self::LAYOUT_TYPES, true ) ) {
				continue;
			}
			$fields->add( self::label( $field ), self::value( $field, $type, $entry ) );
		}
		return new Submission(
			self::SOURCE,
			'gf-' . Props::string( $form, 'id' ),
			$fields->toArray(),
			Props::utcTime( $entry['date_created'] ?? null, $context->now ),
			self::nonEmpty( $entry['source_url'] ?? null ) ?? $context->pageUrl,
			$context->referrer,
			self::nonEmpty( $entry['user_agent'] ?? null ) ?? $context->userAgent,
			self::nonEmpty( $entry['ip'] ?? null ) ?? $context->ip,
		);
	}

	private static function inputType( mixed $field ): string {
		$inputType = Props::string( $field, 'inputType' );
		return '' !== $inputType ? $inputType : Props::string( $field, 'type' );
	}

	private static function label( mixed $field ): string {
		foreach ( array( 'label', 'adminLabel' ) as $property ) {
			$label = trim( Props::string( $field, $property ) );
			if ( '' !== $label ) {
				return $label;
			}
		}
		return 'Field ' . Props::string( $field, 'id' );
	}

	private static function value( mixed $field, string $type, array $entry ): mixed {
		$id = Props::string( $field, 'id' );
		return match ( $type ) {
			'name'        => self::nested( $field, $entry, self::NAME_INPUTS ),
			'address'     => self::nested( $field, $entry, self::ADDRESS_INPUTS ),
			'checkbox'    => self::checked( $field, $entry ),
			'multiselect' => self::multiselect( (string) ( $entry[ $id ] ?? '' ) ),
			'consent'     => '' !== (string) ( $entry[ $id . '.1' ] ?? '' ),
			'list'        => self::listRows( $entry[ $id ] ?? '' ),
			default       => self::single( $field, $entry ),
		};
	}

	/** Visible sub-inputs under stable keys ("first", "city", ...). */
	private static function nested( mixed $field, array $entry, array $keys ): array {
		$out = array();
		foreach ( self::visibleInputs( $field ) as $input ) {
			$inputId = Props::string( $input, 'id' );
			$suffix  = substr( $inputId, strrpos( $inputId, '.' ) + 1 );
			$key     = $keys[ $suffix ] ?? Fields::cleanKey( Props::string( $input, 'label' ) );
			$out[ $key ] = (string) ( $entry[ $inputId ] ?? '' );
		}
		return $out;
	}

	/** @return list<string> the checked choices, in form order. */
	private static function checked( mixed $field, array $entry ): array {
		$values = array();
		foreach ( (array) Props::get( $field, 'inputs', array() ) as $input ) {
			$value = (string) ( $entry[ Props::string( $input, 'id' ) ] ?? '' );
			if ( '' !== $value ) {
				$values[] = $value;
			}
		}
		return $values;
	}

	/** Gravity Forms 2.5+ stores a JSON list; older versions a comma-separated string. */
	private static function multiselect( string $raw ): array {
		if ( '' === $raw ) {
			return array();
		}
		$decoded = json_decode( $raw, true );
		return is_array( $decoded ) ? array_values( $decoded ) : array_map( 'trim', explode( ',', $raw ) );
	}

	/** List fields are stored serialized: a list of strings, or of rows for multi-column lists. */
	private static function listRows( mixed $raw ): array {
		if ( is_array( $raw ) ) {
			return array_values( $raw );
		}
		$rows = is_string( $raw ) && '' !== $raw ? @unserialize( $raw, array( 'allowed_classes' => false ) ) : array();
		return is_array( $rows ) ? array_values( $rows ) : array( (string) $raw );
	}

	/** A one-value field, or any other multi-input field as a map of its input labels. */
	private static function single( mixed $field, array $entry ): mixed {
		$inputs = self::visibleInputs( $field );
		if ( array() === $inputs ) {
			return (string) ( $entry[ Props::string( $field, 'id' ) ] ?? '' );
		}
		$out = array();
		foreach ( $inputs as $input ) {
			$out[ Fields::cleanKey( Props::string( $input, 'label' ) ) ] = (string) ( $entry[ Props::string( $input, 'id' ) ] ?? '' );
		}
		return $out;
	}

	private static function visibleInputs( mixed $field ): array {
		$inputs = Props::get( $field, 'inputs' );
		if ( ! is_array( $inputs ) ) {
			return array();
		}
		return array_values( array_filter( $inputs, static fn( $input ) => empty( Props::get( $input, 'isHidden' ) ) ) );
	}

	private static function nonEmpty( mixed $value ): ?string {
		return is_string( $value ) && '' !== $value ? $value : null;
	}
}
