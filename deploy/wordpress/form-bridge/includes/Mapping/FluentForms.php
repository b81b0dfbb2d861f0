<?php
/**
 * Fluent Forms: `fluentform/submission_inserted( int $insertId, array $formData, object $form )`.
 *
 * `$formData` is the posted data keyed by each field's name attribute; keys are those names.
 * Name and address blocks arrive as maps and become nested objects with the same keys as the
 * other form plugins (`first`, `last`, `line1`, `postcode`, ...); checkboxes arrive as lists.
 * Fluent Forms' own fields (`__fluent_form_embded_post_id`, nonces, `_wp_http_referer`) and
 * captcha answers are left out. The hook runs right after the entry is inserted, so that moment
 * is `submitted_at`.
 */

namespace FormBridge\Mapping;

use FormBridge\Fields;
use FormBridge\RequestContext;
use FormBridge\Submission;

final class FluentForms {
	public const SOURCE = 'fluentforms';

	private const CAPTCHA_KEYS = array( 'g-recaptcha-response', 'h-captcha-response', 'cf-turnstile-response' );
	private const PART_KEYS    = array(
		'first_name'     => 'first',
		'middle_name'    => 'middle',
		'last_name'      => 'last',
		'address_line_1' => 'line1',
		'address_line_2' => 'line2',
		'zip'            => 'postcode',
	);

	public static function map( array $formData, object|array $form, RequestContext $context ): Submission {
		$fields = new Fields();
		foreach ( $formData as $name => $value ) {
			$name = (string) $name;
			if ( str_starts_with( $name, '_' ) || in_array( $name, self::CAPTCHA_KEYS, true ) ) {
				continue;
			}
			$fields->add( $name, self::value( $value ) );
		}
		return new Submission(
			self::SOURCE,
			'fluentforms-' . Props::string( $form, 'id' ),
			$fields->toArray(),
			$context->now,
			self::pageUrl( $formData, $context ),
			$context->referrer,
			$context->userAgent,
			$context->ip,
		);
	}

	private static function value( mixed $value ): mixed {
		if ( ! is_array( $value ) || array_is_list( $value ) ) {
			return $value;
		}
		$nested = array();
		foreach ( $value as $key => $inner ) {
			$nested[ self::PART_KEYS[ $key ] ?? (string) $key ] = $inner;
		}
		return $nested;
	}

	/** Fluent Forms posts the form page's path as `_wp_http_referer`. */
	private static function pageUrl( array $formData, RequestContext $context ): ?string {
		if ( null !== $context->referrer ) {
			return $context->referrer;
		}
		$path = $formData['_wp_http_referer'] ?? null;
		return is_string( $path ) && '' !== $path && function_exists( 'home_url' ) ? home_url( $path ) : $context->pageUrl;
	}
}
