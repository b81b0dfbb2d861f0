<?php

use FormBridge\Signer;
use PHPUnit\Framework\TestCase;

final class SignerTest extends TestCase {
	// The Standard Webhooks specification's test vector (its reference libraries share it).
	private const SECRET    = 'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD';
	private const ID        = 'msg_27UH4WbU6Z5A5EzD8u03UvzRbpk';
	private const TIMESTAMP = 1649367553;
	private const BODY      = '{"email":"test@example.com","username":"test_user"}';
	private const EXPECTED  = 'v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=';

	public function test_signature_matches_the_specs_test_vector(): void {
		$this->assertSame( self::EXPECTED, Signer::fromSecret( self::SECRET )->sign( self::ID, self::TIMESTAMP, self::BODY ) );
	}

	public function test_headers_carry_id_timestamp_and_signature(): void {
		$headers = Signer::fromSecret( self::SECRET )->headers( self::ID, self::TIMESTAMP, self::BODY );
		$this->assertSame(
			array( 'webhook-id' => self::ID, 'webhook-timestamp' => '1649367553', 'webhook-signature' => self::EXPECTED ),
			$headers
		);
	}

	public function test_any_change_to_id_timestamp_or_body_changes_the_signature(): void {
		$signer = Signer::fromSecret( self::SECRET );
		$this->assertNotSame( self::EXPECTED, $signer->sign( self::ID . 'x', self::TIMESTAMP, self::BODY ) );
		$this->assertNotSame( self::EXPECTED, $signer->sign( self::ID, self::TIMESTAMP + 1, self::BODY ) );
		$this->assertNotSame( self::EXPECTED, $signer->sign( self::ID, self::TIMESTAMP, self::BODY . ' ' ) );
	}

	public function test_surrounding_whitespace_in_a_pasted_secret_is_ignored(): void {
		$this->assertSame( self::EXPECTED, Signer::fromSecret( "  " . self::SECRET . "\n" )->sign( self::ID, self::TIMESTAMP, self::BODY ) );
	}

	/** @dataProvider badSecrets */
	public function test_malformed_secrets_are_refused( string $secret ): void {
		$this->assertFalse( Signer::isValidSecret( $secret ) );
		$this->expectException( InvalidArgumentException::class );
		Signer::fromSecret( $secret );
	}

	public static function badSecrets(): array {
		return array(
			'no prefix'       => array( 'C2FVsBQIhrscChlQIMV+b5sSYspob7oD' ),
			'not base64'      => array( 'whsec_!!!not-base64!!!' ),
			'too short'       => array( 'whsec_' . base64_encode( random_bytes( 16 ) ) ),
			'too long'        => array( 'whsec_' . base64_encode( random_bytes( 65 ) ) ),
			'empty'           => array( '' ),
		);
	}

	public function test_a_secret_of_32_random_bytes_as_the_admin_cli_prints_is_valid(): void {
		$this->assertTrue( Signer::isValidSecret( 'whsec_' . base64_encode( random_bytes( 32 ) ) ) );
	}
}
