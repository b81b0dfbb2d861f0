<?php
/**
 * The form plugins' hooks. Each callback maps the hook's arguments (see includes/Mapping/) and
 * hands the submission to Intake, which only writes an outbox row. A form plugin that is not
 * installed never fires its hook, so registering all of them costs nothing.
 */

namespace FormBridge;

use FormBridge\Mapping\ContactForm7;
use FormBridge\Mapping\CustomForm;
use FormBridge\Mapping\FluentForms;
use FormBridge\Mapping\GravityForms;
use FormBridge\Mapping\WPForms;

final class FormHooks {
	public function __construct( private readonly Intake $intake ) {}

	public function register(): void {
		add_action( 'gform_after_submission', array( $this, 'onGravityForms' ), 10, 2 );
		add_action( 'wpforms_process_complete', array( $this, 'onWPForms' ), 10, 4 );
		add_action( 'wpcf7_mail_sent', array( $this, 'onContactForm7' ), 10, 1 );
		add_action( 'fluentform/submission_inserted', array( $this, 'onFluentForms' ), 10, 3 );
		add_action( CustomForm::ACTION, array( $this, 'onCustomForm' ), 10, 3 );
	}

	public function onGravityForms( mixed $entry, mixed $form ): void {
		if ( ! is_array( $entry ) || GravityForms::isSpam( $entry ) || ! ( is_array( $form ) || is_object( $form ) ) ) {
			return;
		}
		$this->guarded( GravityForms::SOURCE, fn() => GravityForms::map( $entry, $form, self::context() ) );
	}

	public function onWPForms( mixed $fields, mixed $entry = array(), mixed $formData = array(), mixed $entryId = 0 ): void {
		if ( ! is_array( $fields ) ) {
			return;
		}
		$this->guarded( WPForms::SOURCE, fn() => WPForms::map( $fields, (array) $entry, (array) $formData, self::context() ) );
	}

	public function onContactForm7( mixed $contactForm ): void {
		$submission = class_exists( '\WPCF7_Submission' ) ? \WPCF7_Submission::get_instance() : null;
		if ( ! is_object( $contactForm ) || ! is_object( $submission ) ) {
			return;
		}
		$this->guarded( ContactForm7::SOURCE, fn() => ContactForm7::map( $contactForm, $submission, self::context() ) );
	}

	public function onFluentForms( mixed $insertId, mixed $formData = array(), mixed $form = null ): void {
		if ( ! is_array( $formData ) || ! ( is_object( $form ) || is_array( $form ) ) ) {
			return;
		}
		$this->guarded( FluentForms::SOURCE, fn() => FluentForms::map( $formData, $form, self::context() ) );
	}

	public function onCustomForm( mixed $formId, mixed $fields = array(), mixed $extra = array() ): void {
		if ( ! is_scalar( $formId ) || ! is_array( $fields ) ) {
			return;
		}
		$this->guarded( CustomForm::SOURCE, fn() => CustomForm::map( (string) $formId, $fields, is_array( $extra ) ? $extra : array(), self::context() ) );
	}

	private static function context(): RequestContext {
		return RequestContext::fromServer( $_SERVER ); // phpcs:ignore WordPress.Security
	}

	/** A mapping error is logged, never thrown into the form plugin's request. */
	private function guarded( string $source, \Closure $map ): void {
		try {
			$this->intake->accept( $map() );
		} catch ( \Throwable $e ) {
			error_log( sprintf( 'Form-Bridge: a %s submission could not be mapped: %s', $source, $e->getMessage() ) ); // phpcs:ignore WordPress.PHP.DevelopmentFunctions
		}
	}
}
