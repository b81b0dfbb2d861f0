<?php

use FormBridge\Envelope;
use FormBridge\Fields;
use FormBridge\Submission;
use PHPUnit\Framework\TestCase;

final class EnvelopeTest extends TestCase {
	private static function submission( array $fields, string $formId = 'contact' ): Submission {
		return new Submission(
			'custom',
			$formId,
			$fields,
			new DateTimeImmutable( '2026-11-25 08:59:58', new DateTimeZone( 'Europe/Berlin' ) ),
			'https://shop.example.com/contact/',
			'https://www.google.com/',
			'Mozilla/5.0',
			'203.0.113.7'
		);
	}

	private static function encoded( Submission $submission, bool $includeIp = false ): array {
		$body = Envelope::encode( Envelope::build( 'shop.example.com', $submission, $includeIp, '1.2.3' ) );
		return array( $body, json_decode( $body, true, 512, JSON_THROW_ON_ERROR ) );
	}

	public function test_the_envelope_has_the_documented_shape(): void {
		[ , $envelope ] = self::encoded( self::submission( array( 'name' => 'Ann' ) ) );
		$this->assertSame( array( 'site', 'form_id', 'fields', 'submitted_at', 'meta' ), array_keys( $envelope ) );
		$this->assertSame( '2026-11-25T07:59:58Z', $envelope['submitted_at'], 'UTC, from the form plugin\'s time' );
		$this->assertSame(
			array( 'page_url' => 'https://shop.example.com/contact/', 'referrer' => 'https://www.google.com/', 'user_agent' => 'Mozilla/5.0', 'plugin' => 'form-bridge-wp', 'plugin_version' => '1.2.3' ),
			$envelope['meta']
		);
	}

	public function test_the_ip_is_sent_only_when_the_site_allows_it(): void {
		[ , $without ] = self::encoded( self::submission( array() ) );
		[ , $with ]    = self::encoded( self::submission( array() ), true );
		$this->assertArrayNotHasKey( 'ip', $without['meta'] );
		$this->assertSame( '203.0.113.7', $with['meta']['ip'] );
	}

	public function test_maps_are_json_objects_and_lists_are_arrays(): void {
		[ $body ] = self::encoded( self::submission( array() ) );
		$this->assertStringContainsString( '"fields":{}', $body, 'no fields is still an object' );
		[ $body ] = self::encoded( self::submission( array( '0' => 'first field', 'tags' => array( 'a', 'b' ), 'address' => array( '1' => 'x' ) ) ) );
		$this->assertStringContainsString( '"fields":{"0":"first field","tags":["a","b"],"address":{"1":"x"}}', $body );
	}

	public function test_the_body_is_ascii_so_storage_cannot_change_a_byte(): void {
		[ $body, $envelope ] = self::encoded( self::submission( array( 'message' => 'Grüße 👋 – “quoted”', 'url' => 'https://x.example/a/b' ) ) );
		$this->assertMatchesRegularExpression( '/^[\x20-\x7e]*$/', $body );
		$this->assertSame( 'Grüße 👋 – “quoted”', $envelope['fields']['message'] );
		$this->assertStringContainsString( 'https://x.example/a/b', $body, 'slashes are not escaped' );
	}

	public function test_control_characters_ingest_refuses_are_removed_but_line_breaks_kept(): void {
		[ , $envelope ] = self::encoded( self::submission( array( "na\x00me" => "line one\r\nline\ttwo\x0b\x1f\x7f" ) ) );
		$this->assertSame( array( 'name' => "line one\r\nline\ttwo" ), $envelope['fields'] );
	}

	public function test_deeper_nesting_is_kept_as_json_text(): void {
		$fields = array( 'repeater' => array( array( 'item' => 'a', 'qty' => 2 ), array( 'item' => 'b', 'qty' => 1 ) ), 'block' => array( 'inner' => array( 'x' => 1 ) ) );
		[ , $envelope ] = self::encoded( self::submission( $fields ) );
		$this->assertSame( array( '{"item":"a","qty":2}', '{"item":"b","qty":1}' ), $envelope['fields']['repeater'] );
		$this->assertSame( array( 'inner' => '{"x":1}' ), $envelope['fields']['block'] );
	}

	public function test_objects_and_dates_become_plain_values(): void {
		$fields = array( 'when' => new DateTimeImmutable( '2026-11-25T08:00:00Z' ), 'obj' => (object) array( 'a' => 1 ), 'n' => 1.5, 'ok' => false, 'none' => null );
		[ , $envelope ] = self::encoded( self::submission( $fields ) );
		$this->assertSame( array( 'when' => '2026-11-25T08:00:00+00:00', 'obj' => array( 'a' => 1 ), 'n' => 1.5, 'ok' => false, 'none' => null ), $envelope['fields'] );
	}

	/** @dataProvider formIds */
	public function test_form_ids_are_made_valid( string $given, string $sent ): void {
		$this->assertSame( $sent, Envelope::formId( $given ) );
	}

	public static function formIds(): array {
		return array(
			array( 'gf-3', 'gf-3' ),
			array( 'Contact form (main)', 'Contact-form-main' ),
			array( str_repeat( 'a', 80 ), str_repeat( 'a', 64 ) ),
			array( '###', 'form' ),
		);
	}

	public function test_repeated_labels_get_numbered_keys_instead_of_overwriting(): void {
		$fields = new Fields();
		$fields->add( 'Email', 'a@example.com' );
		$fields->add( 'Email', 'b@example.com' );
		$fields->add( '<b>Email</b>', 'c@example.com' );
		$fields->add( '', 'no label' );
		$this->assertSame( array( 'Email' => 'a@example.com', 'Email (2)' => 'b@example.com', 'Email (3)' => 'c@example.com', 'field' => 'no label' ), $fields->toArray() );
	}

	public function test_meta_values_are_capped_at_2048_characters(): void {
		$submission = new Submission( 'custom', 'f', array(), new DateTimeImmutable(), 'https://x.example/?q=' . str_repeat( 'a', 5000 ) );
		$this->assertSame( 2048, mb_strlen( Envelope::build( 'x.example', $submission, false, '1' )['meta']['page_url'] ) );
	}
}
