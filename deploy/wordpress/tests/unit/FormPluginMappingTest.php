<?php
/**
 * Each form plugin's hook, fired with realistic arguments (tests/fixtures/), queues the envelope
 * the fixture expects. The same fixtures drive the integration test against real ingest.
 */

final class FormPluginMappingTest extends HookPathTestCase {
	public static function queuedCases(): array {
		$cases = array();
		foreach ( self::cases() as $name => $case ) {
			if ( null !== $case['expected'] ) {
				$cases[ $name ] = array( $name );
			}
		}
		return $cases;
	}

	/** @dataProvider queuedCases */
	public function test_the_hook_queues_the_expected_envelope( string $name ): void {
		$case = self::cases()[ $name ];
		self::fire( $case );
		$this->assertEnvelopeMatches( $case['expected'], $this->queuedEnvelope() );
	}

	public function test_every_form_plugin_has_a_case(): void {
		$hooks = array_unique( array_column( self::cases(), 'hook' ) );
		sort( $hooks );
		$this->assertSame( array( 'fluentform/submission_inserted', 'form_bridge_submit', 'gform_after_submission', 'wpcf7_mail_sent', 'wpforms_process_complete' ), $hooks );
	}

	public function test_gravity_forms_spam_is_never_queued(): void {
		self::fire( self::cases()['gravityforms-spam'] );
		$this->assertSame( array(), self::queuedRows() );
	}

	public function test_gravity_forms_labels_fall_back_and_lists_unserialize(): void {
		$form  = array(
			'id'     => 5,
			'fields' => array(
				(object) array( 'id' => 1, 'type' => 'text', 'label' => '', 'adminLabel' => 'company_name' ),
				(object) array( 'id' => 2, 'type' => 'text', 'label' => '' ),
				(object) array( 'id' => 3, 'type' => 'list', 'label' => 'Guests' ),
				(object) array( 'id' => 4, 'type' => 'text', 'label' => 'Guests' ),
			),
		);
		$entry = array( 'date_created' => '2026-11-25 10:00:00', 'status' => 'active', '1' => 'Acme', '2' => 'x', '3' => serialize( array( 'Ann', 'Bob' ) ), '4' => 'two' );
		do_action( 'gform_after_submission', $entry, $form );
		$this->assertSame(
			array( 'company_name' => 'Acme', 'Field 2' => 'x', 'Guests' => array( 'Ann', 'Bob' ), 'Guests (2)' => 'two' ),
			$this->queuedEnvelope()['fields']
		);
	}

	public function test_wpforms_simple_name_and_empty_checkbox(): void {
		$fields = array(
			1 => array( 'name' => 'Name', 'value' => 'Anna Smith', 'id' => 1, 'type' => 'name', 'first' => '', 'middle' => '', 'last' => '' ),
			2 => array( 'name' => 'Extras', 'value' => '', 'id' => 2, 'type' => 'checkbox' ),
		);
		do_action( 'wpforms_process_complete', $fields, array(), array( 'id' => 7 ), 0 );
		$envelope = $this->queuedEnvelope();
		$this->assertSame( 'wpforms-7', $envelope['form_id'] );
		$this->assertSame( array( 'Name' => 'Anna Smith', 'Extras' => array() ), $envelope['fields'] );
	}

	public function test_contact_form_7_without_a_submission_instance_queues_nothing(): void {
		$case = self::cases()['contact-form-7'];
		WPCF7_Submission::set_instance_for_fixture( null );
		do_action( 'wpcf7_mail_sent', ...$case['args'] );
		$this->assertSame( array(), self::queuedRows() );
	}

	public function test_fluent_forms_page_url_falls_back_to_its_referer_field(): void {
		unset( $_SERVER['HTTP_REFERER'] );
		$case = self::cases()['fluentforms'];
		self::fire( $case );
		$this->assertSame( 'https://shop.example.com/contact/', $this->queuedEnvelope()['meta']['page_url'] );
	}

	public function test_the_fields_filter_drops_fields_before_anything_is_stored(): void {
		add_filter(
			'form_bridge_fields',
			static function ( array $fields, string $formId, string $source ) {
				unset( $fields['Email'], $fields['Address'] );
				return $fields;
			},
			10,
			3
		);
		self::fire( self::cases()['gravityforms'] );
		$rows = self::queuedRows();
		$this->assertStringNotContainsString( 'anna@example.com', $rows[0]['body'] );
		$this->assertStringNotContainsString( 'EC1A', $rows[0]['body'] );
		$this->assertArrayHasKey( 'Name', $this->queuedEnvelope()['fields'] );
	}

	public function test_the_fields_filter_can_skip_a_submission(): void {
		add_filter( 'form_bridge_fields', static fn( $fields, $formId ) => 'newsletter' === $formId ? false : $fields, 10, 2 );
		self::fire( self::cases()['custom'] );
		$this->assertSame( array(), self::queuedRows() );
	}

	public function test_the_form_id_filter_renames_a_form(): void {
		add_filter( 'form_bridge_form_id', static fn( $formId, $source ) => 'wpforms' === $source ? 'contact' : $formId, 10, 2 );
		self::fire( self::cases()['wpforms'] );
		$this->assertSame( 'contact', $this->queuedEnvelope()['form_id'] );
	}

	public function test_the_ip_is_left_out_unless_enabled(): void {
		update_option( FormBridge\Settings::OPTION, array( 'site_domain' => self::SITE ) );
		self::fire( self::cases()['gravityforms'] );
		$this->assertArrayNotHasKey( 'ip', $this->queuedEnvelope()['meta'] );
	}
}
