<?php
/**
 * WPForms: `wpforms_process_complete( array $fields, array $entry, array $form_data, int $entry_id )`.
 *
 * `$fields` is WPForms' processed list, one array per field with `name` (the label), `value`,
 * `id` and `type`. Keys are labels ("Field <id>" when empty). Name fields in a first/last format
 * and address fields become nested objects; checkboxes and multiple selects, whose `value` is
 * one choice per line, become lists. The hook carries no time, so `submitted_at` is the moment
 * WPForms finished processing (when the hook runs).
 */

namespace FormBridge\Mapping;

use FormBridge\Fields;
use FormBridge\RequestContext;
use FormBridge\Submission;

final class WPForms {
	public const SOURCE = 'wpforms';

	private const LAYOUT_TYPES   = array( 'divider', 'html', 'pagebreak', 'captcha', 'content', 'entry-preview', 'layout' );
	private const LIST_TYPES     = array( 'checkbox', 'payment-checkbox' );
	private const NAME_PARTS     = array( 'first' => 'first', 'middle' => 'middle', 'last' => 'last' );
	private const ADDRESS_PARTS  = array( 'address1' => 'line1', 'address2' => 'line2', 'city' => 'city', 'state' => 'state', 'postal' => 'postcode', 'country' => 'country' );

	public static function map( array $fields, array $entry, array $formData, RequestContext $context ): Submission {
		$out = new Fields();
		foreach ( $fields as $field ) {
			$type = (string) ( $field['type'] ?? '' );
			if ( in_array( $type, self::LAYOUT_TYPES, true ) ) {
				continue;
			}
			$out->add( self::label( $field ), self::value( $field, $type, $formData ) );
		}
		$formId = (string) ( $formData['id'] ?? $entry['id'] ?? '' );
		return new Submission(
			self::SOURCE,
			'wpforms-' . $formId,
			$out->toArray(),
			$context->now,
			$context->pageUrl,
			$context->referrer,
			$context->userAgent,
			$context->ip,
		);
	}

	private static function label( array $field ): string {
		$label = trim( (string) ( $field['name'] ?? '' ) );
		return '' !== $label ? $label : 'Field ' . ( $field['id'] ?? '' );
	}

	private static function value( array $field, string $type, array $formData ): mixed {
		if ( 'name' === $type && self::hasParts( $field, self::NAME_PARTS ) ) {
			return self::parts( $field, self::NAME_PARTS );
		}
		if ( 'address' === $type ) {
			return self::parts( $field, self::ADDRESS_PARTS );
		}
		if ( in_array( $type, self::LIST_TYPES, true ) || self::isMultipleSelect( $field, $formData ) ) {
			return self::lines( (string) ( $field['value'] ?? '' ) );
		}
		return $field['value'] ?? '';
	}

	/** Simple-format name fields only have `value`; first/last formats fill the parts. */
	private static function hasParts( array $field, array $parts ): bool {
		foreach ( array_keys( $parts ) as $part ) {
			if ( '' !== (string) ( $field[ $part ] ?? '' ) ) {
				return true;
			}
		}
		return false;
	}

	private static function parts( array $field, array $parts ): array {
		$out = array();
		foreach ( $parts as $from => $to ) {
			if ( array_key_exists( $from, $field ) ) {
				$out[ $to ] = (string) $field[ $from ];
			}
		}
		return $out;
	}

	private static function isMultipleSelect( array $field, array $formData ): bool {
		if ( 'select' !== ( $field['type'] ?? '' ) ) {
			return false;
		}
		$settings = $formData['fields'][ $field['id'] ?? '' ] ?? array();
		return ! empty( $settings['multiple'] );
	}

	/** @return list<string> */
	private static function lines( string $value ): array {
		$lines = array_map( 'trim', preg_split( '/\r\n|\n/', $value ) ?: array() );
		return array_values( array_filter( $lines, static fn( string $line ) => '' !== $line ) );
	}
}
