<?php
/**
 * Our own action for custom forms:
 *
 *     do_action( 'form_bridge_submit', string $form_id, array $fields, array $context = [] );
 *
 * `$fields` is sent as given (labels or names as keys; lists for multiple choices; one level of
 * nested arrays for blocks such as an address). `$context` may hold `submitted_at` (a
 * DateTimeInterface, a Unix time or an RFC 3339 string; default now), `page_url`, `referrer`,
 * `user_agent` and `ip`; missing ones are taken from the current request.
 */

namespace FormBridge\Mapping;

use FormBridge\RequestContext;
use FormBridge\Submission;

final class CustomForm {
	public const SOURCE = 'custom';
	public const ACTION = 'form_bridge_submit';

	public static function map( string $formId, array $fields, array $extra, RequestContext $context ): Submission {
		return new Submission(
			self::SOURCE,
			$formId,
			$fields,
			Props::utcTime( $extra['submitted_at'] ?? null, $context->now ),
			self::text( $extra, 'page_url' ) ?? $context->pageUrl,
			self::text( $extra, 'referrer' ) ?? $context->referrer,
			self::text( $extra, 'user_agent' ) ?? $context->userAgent,
			self::text( $extra, 'ip' ) ?? $context->ip,
		);
	}

	private static function text( array $extra, string $key ): ?string {
		$value = $extra[ $key ] ?? null;
		return is_string( $value ) && '' !== $value ? $value : null;
	}
}
