<?php

use FormBridge\SecretBox;
use FormBridge\Settings;
use PHPUnit\Framework\TestCase;

final class SecretBoxTest extends TestCase {
	private const SECRET = 'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD';

	public function test_a_sealed_secret_opens_with_the_same_salts(): void {
		$box = SecretBox::fromSalts( 'salts-of-this-site' );
		$this->assertSame( self::SECRET, $box->open( $box->seal( self::SECRET ) ) );
	}

	public function test_the_sealed_value_does_not_contain_the_secret(): void {
		$sealed = SecretBox::fromSalts( 'salts-of-this-site' )->seal( self::SECRET );
		$this->assertStringNotContainsString( 'C2FVsBQIhrscChlQIMV', $sealed );
		$this->assertStringNotContainsString( base64_encode( self::SECRET ), $sealed );
	}

	public function test_sealing_twice_gives_different_values(): void {
		$box = SecretBox::fromSalts( 'salts-of-this-site' );
		$this->assertNotSame( $box->seal( self::SECRET ), $box->seal( self::SECRET ) );
	}

	public function test_other_salts_cannot_open_it(): void {
		$sealed = SecretBox::fromSalts( 'salts-of-this-site' )->seal( self::SECRET );
		$this->assertNull( SecretBox::fromSalts( 'salts-of-another-site' )->open( $sealed ) );
	}

	public function test_a_tampered_value_does_not_open(): void {
		$box    = SecretBox::fromSalts( 'salts-of-this-site' );
		$sealed = $box->seal( self::SECRET );
		$raw    = base64_decode( substr( $sealed, 5 ) );
		$raw[30] = chr( ord( $raw[30] ) ^ 1 );
		$this->assertNull( $box->open( 'fbs1:' . base64_encode( $raw ) ) );
		$this->assertNull( $box->open( self::SECRET ) );
		$this->assertNull( $box->open( 'fbs1:###' ) );
	}

	public function test_settings_store_only_the_sealed_secret(): void {
		FormBridgeTestWorld::reset();
		Settings::storeSecret( self::SECRET );
		$stored = FormBridgeTestWorld::$options[ Settings::SECRET_OPTION ];
		$this->assertStringStartsWith( 'fbs1:', $stored );
		$this->assertStringNotContainsString( self::SECRET, $stored );
		$this->assertSame( self::SECRET, Settings::secret() );
	}

	public function test_saving_settings_with_an_empty_secret_keeps_the_stored_one(): void {
		FormBridgeTestWorld::reset();
		$this->assertSame( array(), Settings::save( array( 'endpoint' => 'https://ingest.example.com', 'secret' => self::SECRET ) ) );
		$this->assertSame( array(), Settings::save( array( 'endpoint' => 'https://ingest.example.com', 'secret' => '' ) ) );
		$this->assertSame( self::SECRET, Settings::secret() );
		$this->assertSame( 'https://ingest.example.com/v1/submissions', Settings::endpoint(), 'a bare origin gets the standard path' );
	}

	public function test_a_malformed_secret_is_refused_and_nothing_is_saved(): void {
		FormBridgeTestWorld::reset();
		$problems = Settings::save( array( 'endpoint' => 'https://ingest.example.com/v1/submissions', 'secret' => 'not-a-secret' ) );
		$this->assertCount( 1, $problems );
		$this->assertFalse( Settings::hasSecret() );
		$this->assertSame( '', Settings::endpoint() );
	}
}
