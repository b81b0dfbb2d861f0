<?php
/**
 * Contact Form 7: `wpcf7_mail_sent( WPCF7_ContactForm $contact_form )`, read together with
 * `WPCF7_Submission::get_instance()` (posted data and meta). The action only fires for
 * submissions that passed validation and spam checks and whose mail was sent.
 *
 * Keys are the form-tag names (`your-name`, ...). Checkboxes and multiple selects are lists;
 * single selects and radios are plain values; acceptance boxes are booleans; file uploads and
 * internal fields (`_wpcf7*`, captcha answers) are left out. `submitted_at` is the submission's
 * `timestamp` meta.
 */

namespace FormBridge\Mapping;

use FormBridge\Fields;
use FormBridge\RequestContext;
use FormBridge\Submission;

final class ContactForm7 {
	public const SOURCE = 'contact-form-7';

	private const SKIPPED_TYPES = array( 'file', 'captchac', 'captchar', 'quiz', 'submit', 'hidden_internal' );
	private const CAPTCHA_KEYS  = array( 'g-recaptcha-response', 'h-captcha-response', 'cf-turnstile-response' );

	/**
	 * @param object $contactForm a WPCF7_ContactForm: id(), scan_form_tags()
	 * @param object $submission  a WPCF7_Submission: get_posted_data(), get_meta()
	 */
	public static function map( object $contactForm, object $submission, RequestContext $context ): Submission {
		$tags   = self::tagsByName( $contactForm );
		$fields = new Fields();
		foreach ( (array) $submission->get_posted_data() as $name => $value ) {
			$name = (string) $name;
			$tag  = $tags[ $name ] ?? null;
			if ( self::isInternal( $name ) || ( null !== $tag && in_array( self::basetype( $tag ), self::SKIPPED_TYPES, true ) ) ) {
				continue;
			}
			$fields->add( $name, self::value( $value, $tag ) );
		}
		return new Submission(
			self::SOURCE,
			'cf7-' . $contactForm->id(),
			$fields->toArray(),
			Props::utcTime( self::meta( $submission, 'timestamp' ), $context->now ),
			self::meta( $submission, 'url' ) ?? $context->pageUrl,
			$context->referrer,
			self::meta( $submission, 'user_agent' ) ?? $context->userAgent,
			self::meta( $submission, 'remote_ip' ) ?? $context->ip,
		);
	}

	/** @return array<string, object> */
	private static function tagsByName( object $contactForm ): array {
		$byName = array();
		$tags   = method_exists( $contactForm, 'scan_form_tags' ) ? $contactForm->scan_form_tags() : array();
		foreach ( (array) $tags as $tag ) {
			$name = Props::string( $tag, 'name' );
			if ( '' !== $name ) {
				$byName[ $name ] = $tag;
			}
		}
		return $byName;
	}

	private static function basetype( object|array $tag ): string {
		$base = Props::string( $tag, 'basetype' );
		return '' !== $base ? $base : rtrim( Props::string( $tag, 'type' ), '*' );
	}

	private static function value( mixed $value, object|array|null $tag ): mixed {
		$type = null === $tag ? '' : self::basetype( $tag );
		if ( 'checkbox' === $type || ( 'select' === $type && self::hasOption( $tag, 'multiple' ) ) ) {
			return array_values( (array) $value );
		}
		if ( in_array( $type, array( 'radio', 'select' ), true ) && is_array( $value ) && count( $value ) <= 1 ) {
			return (string) ( array_values( $value )[0] ?? '' );
		}
		if ( 'acceptance' === $type ) {
			return ! empty( $value );
		}
		return is_array( $value ) ? array_values( $value ) : $value;
	}

	private static function hasOption( object|array $tag, string $option ): bool {
		if ( is_object( $tag ) && method_exists( $tag, 'has_option' ) ) {
			return (bool) $tag->has_option( $option );
		}
		return in_array( $option, (array) Props::get( $tag, 'options', array() ), true );
	}

	private static function isInternal( string $name ): bool {
		return str_starts_with( $name, '_' ) || in_array( $name, self::CAPTCHA_KEYS, true );
	}

	private static function meta( object $submission, string $name ): mixed {
		$value = method_exists( $submission, 'get_meta' ) ? $submission->get_meta( $name ) : null;
		return null === $value || '' === $value ? null : $value;
	}
}
