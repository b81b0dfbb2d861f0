<?php
/**
 * Settings → Form-Bridge: endpoint, site domain and secret (write-only: a stored secret is never
 * shown, not even in part), the IP and retention choices, a "send test submission" button that
 * shows ingest's real answer, the last 24 hours' counts, and the pending and failed rows with
 * their last error and bulk retry or delete.
 *
 * Every change is a POST to admin-post.php, checked for the manage_options capability and a nonce.
 */

namespace FormBridge\Admin;

use FormBridge\Dispatcher;
use FormBridge\Envelope;
use FormBridge\Intake;
use FormBridge\Outbox;
use FormBridge\OutboxRow;
use FormBridge\Plugin;
use FormBridge\Settings;
use FormBridge\Submission;

final class SettingsPage {
	public const SLUG                    = 'form-bridge';
	public const NOTICE_TRANSIENT_PREFIX = 'form_bridge_notice_';
	private const CAPABILITY             = 'manage_options';
	private const ROWS_SHOWN             = 100;

	public function __construct( private readonly Outbox $outbox, private readonly Dispatcher $dispatcher ) {}

	public function register( string $pluginFile ): void {
		add_action( 'admin_menu', array( $this, 'addMenu' ) );
		add_action( 'admin_post_form_bridge_save', array( $this, 'handleSave' ) );
		add_action( 'admin_post_form_bridge_test', array( $this, 'handleTest' ) );
		add_action( 'admin_post_form_bridge_rows', array( $this, 'handleRows' ) );
		add_filter( 'plugin_action_links_' . plugin_basename( $pluginFile ), array( $this, 'addSettingsLink' ) );
	}

	public function addMenu(): void {
		add_options_page( 'Form-Bridge', 'Form-Bridge', self::CAPABILITY, self::SLUG, array( $this, 'render' ) );
	}

	/** @param list<string> $links */
	public function addSettingsLink( array $links ): array {
		array_unshift( $links, '<a href="' . esc_url( self::url() ) . '">' . esc_html__( 'Settings', 'form-bridge' ) . '</a>' );
		return $links;
	}

	public function handleSave(): void {
		$this->authorize( 'form_bridge_save' );
		$input    = wp_unslash( (array) ( $_POST['form_bridge'] ?? array() ) ); // phpcs:ignore WordPress.Security
		$problems = Settings::save( $input );
		$this->redirectWith( array() === $problems ? array( 'success', __( 'Settings saved.', 'form-bridge' ) ) : array( 'error', implode( ' ', $problems ) ) );
	}

	/** Sends one signed test submission now, outside the outbox, and shows the real answer. */
	public function handleTest(): void {
		$this->authorize( 'form_bridge_test' );
		$submission = new Submission(
			'test',
			'form-bridge-test',
			array( 'message' => 'Test submission from the Form-Bridge settings page' ),
			new \DateTimeImmutable( 'now', new \DateTimeZone( 'UTC' ) ),
			self::url()
		);
		$body = Envelope::encode( Envelope::build( Settings::siteDomain(), $submission, false, Plugin::VERSION ) );
		[ $reply, $outcome ] = $this->dispatcher->sendOnce( Intake::newWebhookId(), $body );
		$answer = null !== $reply->transportError
			? sprintf( __( 'No answer: %s', 'form-bridge' ), $reply->transportError )
			: sprintf( __( 'HTTP %1$d: %2$s', 'form-bridge' ), $reply->status, mb_substr( $reply->body, 0, 500 ) );
		$this->redirectWith( array( 'done' === $outcome->verdict->value ? 'success' : 'error', $answer ) );
	}

	public function handleRows(): void {
		$this->authorize( 'form_bridge_rows' );
		$ids    = array_map( 'intval', (array) ( $_POST['rows'] ?? array() ) ); // phpcs:ignore WordPress.Security
		$action = sanitize_key( (string) ( $_POST['row_action'] ?? '' ) ); // phpcs:ignore WordPress.Security
		$count  = match ( $action ) {
			'retry'            => $this->outbox->retry( $ids, time() ),
			'retry_all_failed' => $this->outbox->retryAllFailed( time() ),
			'delete'           => $this->outbox->delete( $ids, time() ),
			default            => 0,
		};
		/* translators: %d: number of rows */
		$this->redirectWith( array( 'success', sprintf( __( '%d rows updated. Retried rows are sent within a minute.', 'form-bridge' ), $count ) ) );
	}

	public function render(): void {
		if ( ! current_user_can( self::CAPABILITY ) ) {
			return;
		}
		echo '<div class="wrap"><h1>Form-Bridge</h1>';
		$this->renderNotice();
		$this->renderBlocker();
		$this->renderSettingsForm();
		$this->renderTestButton();
		$this->renderCounts();
		$this->renderRows( Outbox::PENDING, __( 'Waiting to be sent', 'form-bridge' ) );
		$this->renderRows( Outbox::FAILED, __( 'Failed', 'form-bridge' ) );
		echo '</div>';
	}

	private function renderNotice(): void {
		$key    = self::NOTICE_TRANSIENT_PREFIX . get_current_user_id();
		$notice = get_transient( $key );
		if ( ! is_array( $notice ) ) {
			return;
		}
		delete_transient( $key );
		printf( '<div class="notice notice-%s"><p>%s</p></div>', esc_attr( $notice[0] ), esc_html( $notice[1] ) );
	}

	private function renderBlocker(): void {
		$blocker = Settings::sendingBlocker();
		if ( null !== $blocker ) {
			printf( '<div class="notice notice-warning"><p>%s %s</p></div>', esc_html__( 'Sending is paused; submissions are kept in the outbox.', 'form-bridge' ), esc_html( $blocker ) );
		}
	}

	private function renderSettingsForm(): void {
		$s = Settings::all();
		echo '<form method="post" action="' . esc_url( admin_url( 'admin-post.php' ) ) . '">';
		wp_nonce_field( 'form_bridge_save' );
		echo '<input type="hidden" name="action" value="form_bridge_save"><table class="form-table" role="presentation">';
		$this->textRow( 'endpoint', __( 'Endpoint', 'form-bridge' ), $s['endpoint'], 'https://ingest.example.com/v1/submissions', 'url' );
		$this->textRow( 'site_domain', __( 'Site domain', 'form-bridge' ), $s['site_domain'], Settings::siteDomain(), 'text' );
		$secretState = Settings::hasSecret() ? __( 'A secret is stored. Leave empty to keep it.', 'form-bridge' ) : __( 'No secret is stored.', 'form-bridge' );
		echo '<tr><th scope="row"><label for="fb-secret">' . esc_html__( 'Signing secret', 'form-bridge' ) . '</label></th><td>';
		echo '<input type="password" id="fb-secret" name="form_bridge[secret]" value="" class="regular-text" autocomplete="new-password" placeholder="whsec_...">';
		echo '<p class="description">' . esc_html( $secretState ) . '</p></td></tr>';
		echo '<tr><th scope="row">' . esc_html__( 'Visitor IP', 'form-bridge' ) . '</th><td><label><input type="checkbox" name="form_bridge[include_ip]" value="1" ' . checked( $s['include_ip'], true, false ) . '> ';
		echo esc_html__( 'Send the visitor\'s IP address (off by default, for privacy)', 'form-bridge' ) . '</label></td></tr>';
		$this->textRow( 'retention_days', __( 'Keep delivered rows (days)', 'form-bridge' ), (string) $s['retention_days'], '7', 'number' );
		echo '</table>';
		submit_button( __( 'Save settings', 'form-bridge' ) );
		echo '</form>';
	}

	private function textRow( string $name, string $label, string $value, string $placeholder, string $type ): void {
		printf(
			'<tr><th scope="row"><label for="fb-%1$s">%2$s</label></th><td><input type="%3$s" id="fb-%1$s" name="form_bridge[%1$s]" value="%4$s" placeholder="%5$s" class="regular-text"></td></tr>',
			esc_attr( $name ),
			esc_html( $label ),
			esc_attr( $type ),
			esc_attr( $value ),
			esc_attr( $placeholder )
		);
	}

	private function renderTestButton(): void {
		echo '<form method="post" action="' . esc_url( admin_url( 'admin-post.php' ) ) . '">';
		wp_nonce_field( 'form_bridge_test' );
		echo '<input type="hidden" name="action" value="form_bridge_test">';
		submit_button( __( 'Send test submission', 'form-bridge' ), 'secondary', 'submit', false );
		echo '</form>';
	}

	private function renderCounts(): void {
		$c = $this->outbox->counts( time() - DAY_IN_SECONDS );
		echo '<h2>' . esc_html__( 'Last 24 hours', 'form-bridge' ) . '</h2><p>';
		printf(
			/* translators: 1: received, 2: delivered, 3: failed, 4: waiting now, 5: failed now */
			esc_html__( 'Received %1$d, delivered %2$d, failed %3$d. Waiting now: %4$d. Failed in all: %5$d.', 'form-bridge' ),
			(int) $c['received'],
			(int) $c['delivered'],
			(int) $c['failed'],
			(int) $c['pending_now'],
			(int) $c['failed_now']
		);
		echo '</p>';
	}

	private function renderRows( string $status, string $title ): void {
		$rows = $this->outbox->listByStatus( $status, self::ROWS_SHOWN );
		echo '<h2>' . esc_html( $title ) . ' (' . count( $rows ) . ')</h2>';
		if ( array() === $rows ) {
			return;
		}
		echo '<form method="post" action="' . esc_url( admin_url( 'admin-post.php' ) ) . '">';
		wp_nonce_field( 'form_bridge_rows' );
		echo '<input type="hidden" name="action" value="form_bridge_rows"><table class="widefat striped"><thead><tr><td></td>';
		foreach ( array( 'Row', 'Form', 'Source', 'Queued', 'Attempts', 'Next attempt', 'Last answer' ) as $heading ) {
			echo '<th>' . esc_html( $heading ) . '</th>';
		}
		echo '</tr></thead><tbody>';
		array_walk( $rows, array( $this, 'renderRow' ) );
		echo '</tbody></table><p>';
		echo '<button class="button" name="row_action" value="retry">' . esc_html__( 'Retry selected now', 'form-bridge' ) . '</button> ';
		if ( Outbox::FAILED === $status ) {
			echo '<button class="button" name="row_action" value="retry_all_failed">' . esc_html__( 'Retry all failed', 'form-bridge' ) . '</button> ';
		}
		echo '<button class="button" name="row_action" value="delete">' . esc_html__( 'Delete selected', 'form-bridge' ) . '</button></p></form>';
	}

	private function renderRow( OutboxRow $row ): void {
		$next = Outbox::PENDING === $row->status ? self::when( $row->nextAttemptAt ) : '-';
		$last = 0 === $row->attempts ? __( 'not tried yet', 'form-bridge' ) : ( $row->lastStatus > 0 ? $row->lastStatus . ' ' : '' ) . $row->lastError;
		printf(
			'<tr><th scope="row"><input type="checkbox" name="rows[]" value="%1$d"></th><td>%1$d</td><td>%2$s</td><td>%3$s</td><td>%4$s</td><td>%5$d</td><td>%6$s</td><td>%7$s</td></tr>',
			$row->id,
			esc_html( $row->formId ),
			esc_html( $row->source ),
			esc_html( self::when( $row->createdAt ) ),
			$row->attempts,
			esc_html( $next ),
			esc_html( $last )
		);
	}

	private static function when( int $timestamp ): string {
		return wp_date( 'Y-m-d H:i:s', $timestamp ) ?: '';
	}

	private function authorize( string $nonceAction ): void {
		if ( ! current_user_can( self::CAPABILITY ) ) {
			wp_die( esc_html__( 'You may not change Form-Bridge settings.', 'form-bridge' ), 403 );
		}
		check_admin_referer( $nonceAction );
	}

	/** @param array{0: string, 1: string} $notice */
	private function redirectWith( array $notice ): void {
		set_transient( self::NOTICE_TRANSIENT_PREFIX . get_current_user_id(), $notice, 5 * MINUTE_IN_SECONDS );
		wp_safe_redirect( self::url() );
		exit;
	}

	private static function url(): string {
		return admin_url( 'options-general.php?page=' . self::SLUG );
	}
}
