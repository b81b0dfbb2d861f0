<?php

namespace FormBridge;

/** One outbox row, as read from the table. */
final class OutboxRow {
	public function __construct(
		public readonly int $id,
		public readonly string $webhookId,
		public readonly string $source,
		public readonly string $formId,
		public readonly string $body,
		public readonly string $status,
		public readonly int $attempts,
		public readonly int $createdAt,
		public readonly int $updatedAt,
		public readonly int $nextAttemptAt,
		public readonly int $windowStart,
		public readonly int $lastStatus,
		public readonly string $lastError,
		public readonly string $submissionId,
	) {}

	/** @param array<string, mixed> $row a row fetched with ARRAY_A */
	public static function fromArray( array $row ): self {
		return new self(
			(int) $row['id'],
			(string) $row['webhook_id'],
			(string) $row['source'],
			(string) $row['form_id'],
			(string) $row['body'],
			(string) $row['status'],
			(int) $row['attempts'],
			(int) $row['created_at'],
			(int) $row['updated_at'],
			(int) $row['next_attempt_at'],
			(int) $row['window_start'],
			(int) $row['last_status'],
			(string) ( $row['last_error'] ?? '' ),
			(string) $row['submission_id'],
		);
	}
}
