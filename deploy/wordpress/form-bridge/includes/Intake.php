<?php
/**
 * Turns a mapped submission into an outbox row: the site's filters run, the envelope is built
 * and encoded once, and the row is written with a new webhook-id. Then it asks the scheduler to
 * send after the response. No network I/O happens here, and nothing here may break the form
 * plugin's own processing: errors are logged (without any field data) and swallowed.
 */

namespace FormBridge;

final class Intake {
	public function __construct(
		private readonly Outbox $outbox,
		private readonly Scheduler $scheduler,
		private readonly string $pluginVersion,
	) {}

	/** @return int|null the outbox row id, or null when the site's filter dropped it or it failed */
	public function accept( Submission $submission ): ?int {
		try {
			$submission = $this->applyFilters( $submission );
			if ( null === $submission ) {
				return null;
			}
			$envelope = Envelope::build( Settings::siteDomain(), $submission, Settings::includeIp(), $this->pluginVersion );
			$rowId    = $this->outbox->add( self::newWebhookId(), $submission->source, $envelope['form_id'], Envelope::encode( $envelope ), time() );
			$this->scheduler->requestSendAfterResponse( $rowId );
			do_action( 'form_bridge_queued', $rowId, $envelope['form_id'], $submission->source );
			return $rowId;
		} catch ( \Throwable $e ) {
			error_log( sprintf( 'Form-Bridge: a %s submission could not be queued: %s', $submission->source ?? '?', $e->getMessage() ) ); // phpcs:ignore WordPress.PHP.DevelopmentFunctions
			return null;
		}
	}

	/** `msg_` and 32 random hex digits: unique per submission, the same for every retry. */
	public static function newWebhookId(): string {
		return 'msg_' . bin2hex( random_bytes( 16 ) );
	}

	/**
	 * `form_bridge_form_id` may rename the form; `form_bridge_fields` may drop or change fields
	 * before anything is stored, or return false to not send this submission at all.
	 */
	private function applyFilters( Submission $submission ): ?Submission {
		$formId = apply_filters( 'form_bridge_form_id', $submission->formId, $submission->source, $submission );
		$fields = apply_filters( 'form_bridge_fields', $submission->fields, $submission->formId, $submission->source, $submission );
		if ( ! is_array( $fields ) ) {
			return null;
		}
		return $submission->withFormId( (string) $formId )->withFields( $fields );
	}
}
