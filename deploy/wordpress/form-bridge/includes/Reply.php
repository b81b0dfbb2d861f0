<?php
/**
 * What one HTTP attempt came back with: a status and the few headers we read, or a transport
 * error (no response at all). Built by HttpSender, read by Outcome.
 */

namespace FormBridge;

final class Reply {
	public function __construct(
		public readonly int $status,
		public readonly string $body = '',
		public readonly ?string $retryAfter = null,
		public readonly ?string $location = null,
		public readonly ?string $transportError = null,
	) {}

	public static function transportError( string $message ): self {
		return new self( 0, '', null, null, $message );
	}
}
