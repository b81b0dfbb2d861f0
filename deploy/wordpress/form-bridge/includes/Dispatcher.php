<?php
/**
 * Sends due outbox rows. Called by the every-minute cron job, after a visitor's response, and by
 * Action Scheduler where a site has it.
 *
 * For each due row: claim it, sign its fixed body with its fixed webhook-id and a fresh
 * timestamp, POST it, and record the outcome (Outcome decides; Backoff says when to retry).
 * A row that is not claimed is never sent. When the endpoint answers with a retryable failure,
 * the run stops: the other rows would most likely fail the same way, and waiting out a timeout
 * for each would hold the cron run for minutes.
 */

namespace FormBridge;

final class Dispatcher {
	public const BATCH_SIZE     = 50;
	// Stop taking new rows after this, well inside PHP's usual 30 s max_execution_time.
	public const BUDGET_SECONDS = 20;
	// The claim outlives the longest attempt, so a slow send is not taken by the next run.
	public const LEASE_SECONDS = HttpSender::TIMEOUT_SECONDS + 30;

	public function __construct( private readonly Outbox $outbox, private readonly HttpSender $sender ) {}

	/** @return array{sent: int, retrying: int, failed: int, blocked: ?string} */
	public function run( int $limit = self::BATCH_SIZE ): array {
		$report = array( 'sent' => 0, 'retrying' => 0, 'failed' => 0, 'blocked' => Settings::sendingBlocker() );
		if ( null !== $report['blocked'] ) {
			return $report;
		}
		$endpoint = Settings::endpoint();
		$signer   = Signer::fromSecret( (string) Settings::secret() );
		$started  = time();
		foreach ( $this->outbox->dueIds( time(), $limit ) as $id ) {
			if ( time() - $started > self::BUDGET_SECONDS ) {
				break;
			}
			$verdict = $this->sendRow( $id, $endpoint, $signer );
			if ( null !== $verdict ) {
				$report[ self::reportKey( $verdict ) ]++;
			}
			if ( Verdict::Retry === $verdict ) {
				break;
			}
		}
		return $report;
	}

	/**
	 * One signed POST of a body, outside the outbox: the settings page's test button.
	 *
	 * @return array{0: Reply, 1: Outcome}
	 */
	public function sendOnce( string $webhookId, string $body ): array {
		$blocker = Settings::sendingBlocker();
		if ( null !== $blocker ) {
			$reply = Reply::transportError( $blocker );
			return array( $reply, Outcome::fromReply( $reply, time() ) );
		}
		$reply = $this->post( Settings::endpoint(), Signer::fromSecret( (string) Settings::secret() ), $webhookId, $body );
		return array( $reply, Outcome::fromReply( $reply, time() ) );
	}

	/** @return Verdict|null null when another run holds the row */
	private function sendRow( int $id, string $endpoint, Signer $signer ): ?Verdict {
		$token = bin2hex( random_bytes( 16 ) );
		if ( ! $this->outbox->claim( $id, $token, time(), self::LEASE_SECONDS ) ) {
			return null;
		}
		$row = $this->outbox->find( $id );
		if ( null === $row ) {
			return null;
		}
		$outcome = Outcome::fromReply( $this->post( $endpoint, $signer, $row->webhookId, $row->body ), time() );
		$this->record( $row, $token, $outcome, time() );
		return $outcome->verdict;
	}

	private function post( string $endpoint, Signer $signer, string $webhookId, string $body ): Reply {
		return $this->sender->post( $endpoint, $signer->headers( $webhookId, time(), $body ), $body );
	}

	private function record( OutboxRow $row, string $token, Outcome $outcome, int $now ): void {
		if ( Verdict::Done === $outcome->verdict ) {
			$this->outbox->markDone( $row->id, $token, $outcome->status, (string) $outcome->submissionId, $now );
			return;
		}
		if ( Verdict::Failed === $outcome->verdict ) {
			$this->outbox->markFailed( $row->id, $token, $outcome->status, $outcome->error, $now );
			return;
		}
		if ( Backoff::exhausted( $row->windowStart, $now, self::retryWindow() ) ) {
			$hours = intdiv( $now - $row->windowStart, 3600 );
			$error = sprintf( 'gave up after %d attempts over %d h; last: %s', $row->attempts + 1, $hours, $outcome->error );
			$this->outbox->markFailed( $row->id, $token, $outcome->status, $error, $now );
			return;
		}
		$delay = $outcome->retryAfter ?? Backoff::delay( $row->attempts + 1, mt_rand() / mt_getrandmax() );
		$this->outbox->scheduleRetry( $row->id, $token, $outcome->status, $outcome->error, $now + $delay, $now );
	}

	/** Filterable, never below 24 hours (Backoff enforces the floor). */
	private static function retryWindow(): int {
		return (int) apply_filters( 'form_bridge_retry_window', Backoff::RETRY_WINDOW );
	}

	private static function reportKey( Verdict $verdict ): string {
		return match ( $verdict ) {
			Verdict::Done   => 'sent',
			Verdict::Retry  => 'retrying',
			Verdict::Failed => 'failed',
		};
	}
}
