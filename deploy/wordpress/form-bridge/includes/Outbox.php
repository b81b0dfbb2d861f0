<?php
/**
 * The outbox table: every submission is written here, with its webhook-id and body fixed, in
 * the request that received it and before any network I/O. Rows move pending → done, or
 * pending → failed; a failed row goes back to pending only by a retry from the settings page.
 *
 * Concurrency: a sender owns a row only after a conditional UPDATE sets its claim token and
 * lease (`claimed_until`); every later change to the row is conditional on that token. Two cron
 * runs therefore never send the same row at once, and a run that dies mid-send releases its
 * rows when the lease expires. Times are Unix seconds.
 */

namespace FormBridge;

final class Outbox {
	public const TABLE      = 'form_bridge_outbox';
	public const PENDING    = 'pending';
	public const DONE       = 'done';
	public const FAILED     = 'failed';
	public const DB_VERSION = '1';
	public const DB_VERSION_OPTION = 'form_bridge_db_version';

	private const PRUNE_BATCH = 500;

	public function table(): string {
		global $wpdb;
		return $wpdb->prefix . self::TABLE;
	}

	/** Creates or updates the table (dbDelta) and records the schema version. */
	public function install(): void {
		global $wpdb;
		require_once ABSPATH . 'wp-admin/includes/upgrade.php';
		$table   = $this->table();
		$charset = $wpdb->get_charset_collate();
		dbDelta(
			"CREATE TABLE $table (
  id bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  webhook_id varchar(64) NOT NULL,
  source varchar(32) NOT NULL DEFAULT '',
  form_id varchar(64) NOT NULL DEFAULT '',
  body longtext NOT NULL,
  status varchar(16) NOT NULL DEFAULT 'pending',
  attempts int(10) unsigned NOT NULL DEFAULT 0,
  created_at bigint(20) NOT NULL DEFAULT 0,
  updated_at bigint(20) NOT NULL DEFAULT 0,
  next_attempt_at bigint(20) NOT NULL DEFAULT 0,
  window_start bigint(20) NOT NULL DEFAULT 0,
  claim_token varchar(32) NOT NULL DEFAULT '',
  claimed_until bigint(20) NOT NULL DEFAULT 0,
  last_status smallint(5) unsigned NOT NULL DEFAULT 0,
  last_error text NULL,
  submission_id varchar(64) NOT NULL DEFAULT '',
  PRIMARY KEY  (id),
  UNIQUE KEY webhook_id (webhook_id),
  KEY status_due (status,next_attempt_at),
  KEY status_updated (status,updated_at),
  KEY created_at (created_at)
) $charset;"
		);
		update_option( self::DB_VERSION_OPTION, self::DB_VERSION );
	}

	public function drop(): void {
		global $wpdb;
		$wpdb->query( 'DROP TABLE IF EXISTS ' . $this->table() ); // phpcs:ignore WordPress.DB.PreparedSQL
		delete_option( self::DB_VERSION_OPTION );
	}

	/**
	 * Queues one submission, due at once.
	 *
	 * @throws \RuntimeException when the row could not be written.
	 */
	public function add( string $webhookId, string $source, string $formId, string $body, int $now ): int {
		global $wpdb;
		$written = $wpdb->insert(
			$this->table(),
			array(
				'webhook_id'      => $webhookId,
				'source'          => $source,
				'form_id'         => $formId,
				'body'            => $body,
				'status'          => self::PENDING,
				'created_at'      => $now,
				'updated_at'      => $now,
				'next_attempt_at' => $now,
				'window_start'    => $now,
			),
			array( '%s', '%s', '%s', '%s', '%s', '%d', '%d', '%d', '%d' )
		);
		if ( 1 !== $written ) {
			throw new \RuntimeException( 'the outbox row could not be written: ' . $wpdb->last_error );
		}
		return (int) $wpdb->insert_id;
	}

	/** @return list<int> ids of pending rows that are due and not claimed, oldest due first. */
	public function dueIds( int $now, int $limit ): array {
		global $wpdb;
		$ids = $wpdb->get_col(
			$wpdb->prepare(
				"SELECT id FROM {$this->table()} WHERE status = %s AND next_attempt_at <= %d AND claimed_until < %d ORDER BY next_attempt_at, id LIMIT %d",
				self::PENDING,
				$now,
				$now,
				$limit
			)
		);
		return array_map( 'intval', $ids );
	}

	/** Takes a row for one attempt; false when another run holds it or it is no longer due. */
	public function claim( int $id, string $token, int $now, int $leaseSeconds ): bool {
		global $wpdb;
		$changed = $wpdb->query(
			$wpdb->prepare(
				"UPDATE {$this->table()} SET claim_token = %s, claimed_until = %d WHERE id = %d AND status = %s AND next_attempt_at <= %d AND claimed_until < %d",
				$token,
				$now + $leaseSeconds,
				$id,
				self::PENDING,
				$now,
				$now
			)
		);
		return 1 === $changed;
	}

	public function find( int $id ): ?OutboxRow {
		global $wpdb;
		$row = $wpdb->get_row( $wpdb->prepare( "SELECT * FROM {$this->table()} WHERE id = %d", $id ), ARRAY_A );
		return is_array( $row ) ? OutboxRow::fromArray( $row ) : null;
	}

	public function markDone( int $id, string $token, int $status, string $submissionId, int $now ): void {
		$this->finishAttempt( $id, $token, array( 'status' => self::DONE, 'last_status' => $status, 'last_error' => '', 'submission_id' => $submissionId, 'updated_at' => $now ) );
	}

	public function scheduleRetry( int $id, string $token, int $status, string $error, int $nextAttemptAt, int $now ): void {
		$this->finishAttempt( $id, $token, array( 'last_status' => $status, 'last_error' => $error, 'next_attempt_at' => $nextAttemptAt, 'updated_at' => $now ) );
	}

	public function markFailed( int $id, string $token, int $status, string $error, int $now ): void {
		$this->finishAttempt( $id, $token, array( 'status' => self::FAILED, 'last_status' => $status, 'last_error' => $error, 'updated_at' => $now ) );
	}

	/**
	 * Makes rows due now with a fresh retry window (the settings page's bulk retry). Rows being
	 * sent at this moment are left alone.
	 *
	 * @param list<int> $ids
	 */
	public function retry( array $ids, int $now ): int {
		global $wpdb;
		if ( array() === $ids ) {
			return 0;
		}
		$in = $this->idList( $ids );
		return (int) $wpdb->query(
			$wpdb->prepare(
				"UPDATE {$this->table()} SET status = %s, next_attempt_at = %d, window_start = %d, updated_at = %d WHERE id IN ($in) AND status IN (%s, %s) AND claimed_until < %d",
				self::PENDING,
				$now,
				$now,
				$now,
				self::PENDING,
				self::FAILED,
				$now
			)
		);
	}

	/** Every failed row, made due now. */
	public function retryAllFailed( int $now ): int {
		global $wpdb;
		return (int) $wpdb->query(
			$wpdb->prepare(
				"UPDATE {$this->table()} SET status = %s, next_attempt_at = %d, window_start = %d, updated_at = %d WHERE status = %s",
				self::PENDING,
				$now,
				$now,
				$now,
				self::FAILED
			)
		);
	}

	/** @param list<int> $ids pending or failed rows to forget (a site owner's privacy choice). */
	public function delete( array $ids, int $now ): int {
		global $wpdb;
		if ( array() === $ids ) {
			return 0;
		}
		$in = $this->idList( $ids );
		return (int) $wpdb->query(
			$wpdb->prepare( "DELETE FROM {$this->table()} WHERE id IN ($in) AND status IN (%s, %s) AND claimed_until < %d", self::PENDING, self::FAILED, $now )
		);
	}

	/** Deletes delivered rows last changed before $before, a batch at a time. */
	public function pruneDone( int $before ): int {
		global $wpdb;
		return (int) $wpdb->query(
			$wpdb->prepare( "DELETE FROM {$this->table()} WHERE status = %s AND updated_at < %d LIMIT %d", self::DONE, $before, self::PRUNE_BATCH )
		);
	}

	/** @return list<OutboxRow> newest first */
	public function listByStatus( string $status, int $limit ): array {
		global $wpdb;
		$rows = $wpdb->get_results(
			$wpdb->prepare( "SELECT * FROM {$this->table()} WHERE status = %s ORDER BY id DESC LIMIT %d", $status, $limit ),
			ARRAY_A
		);
		return array_map( array( OutboxRow::class, 'fromArray' ), (array) $rows );
	}

	/** @return array{received: int, delivered: int, failed: int, pending_now: int, failed_now: int} */
	public function counts( int $since ): array {
		global $wpdb;
		$t     = $this->table();
		$count = static fn( string $sql ) => (int) $wpdb->get_var( $sql );
		return array(
			'received'    => $count( $wpdb->prepare( "SELECT COUNT(*) FROM $t WHERE created_at >= %d", $since ) ),
			'delivered'   => $count( $wpdb->prepare( "SELECT COUNT(*) FROM $t WHERE status = %s AND updated_at >= %d", self::DONE, $since ) ),
			'failed'      => $count( $wpdb->prepare( "SELECT COUNT(*) FROM $t WHERE status = %s AND updated_at >= %d", self::FAILED, $since ) ),
			'pending_now' => $count( $wpdb->prepare( "SELECT COUNT(*) FROM $t WHERE status = %s", self::PENDING ) ),
			'failed_now'  => $count( $wpdb->prepare( "SELECT COUNT(*) FROM $t WHERE status = %s", self::FAILED ) ),
		);
	}

	/** Counts the attempt and releases the claim, only if the claim is still ours. */
	private function finishAttempt( int $id, string $token, array $changes ): void {
		global $wpdb;
		$sets   = array( 'attempts = attempts + 1', "claim_token = ''", 'claimed_until = 0' );
		$values = array();
		foreach ( $changes as $column => $value ) {
			$sets[]   = "$column = " . ( is_int( $value ) ? '%d' : '%s' );
			$values[] = $value;
		}
		$values[] = $id;
		$values[] = $token;
		$wpdb->query( $wpdb->prepare( "UPDATE {$this->table()} SET " . implode( ', ', $sets ) . ' WHERE id = %d AND claim_token = %s', $values ) );
	}

	/** @param list<int> $ids */
	private function idList( array $ids ): string {
		return implode( ',', array_map( 'intval', $ids ) );
	}
}
