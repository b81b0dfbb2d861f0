<?php
/**
 * Test-only must-use plugin, installed by deploy/wordpress/test.sh into the throwaway WordPress
 * it serves, never shipped. It plays the form plugins (which cannot be installed here) by firing
 * their hooks with the fixtures' arguments inside a real admin-ajax.php request, and lets the
 * integration test look at the outbox and make time pass. Every call needs the run's token.
 *
 * It also allows the run's ingest port in wp_safe_remote_post (see README: troubleshooting).
 */

if ( ! defined( 'FORM_BRIDGE_IT_TOKEN' ) ) {
	return;
}

add_filter(
	'http_allowed_safe_ports',
	static fn( $ports ) => array_merge( (array) $ports, array( (int) FORM_BRIDGE_IT_INGEST_PORT ) )
);

add_action( 'wp_ajax_nopriv_form_bridge_it', 'form_bridge_it_handle' );
add_action( 'wp_ajax_form_bridge_it', 'form_bridge_it_handle' );

function form_bridge_it_handle(): void {
	if ( ! hash_equals( FORM_BRIDGE_IT_TOKEN, (string) ( $_GET['token'] ?? '' ) ) ) {
		wp_send_json( array( 'error' => 'bad token' ), 403 );
	}
	$op = (string) ( $_GET['op'] ?? '' );
	$result = match ( $op ) {
		'fire'      => form_bridge_it_fire( (string) ( $_GET['case'] ?? '' ) ),
		'rows'      => form_bridge_it_rows( form_bridge_it_ids() ),
		'advance'   => form_bridge_it_advance(),
		'resend'    => form_bridge_it_resend( form_bridge_it_ids() ),
		'test_send' => form_bridge_it_test_send(),
		'retry'     => array( 'retried' => FormBridge\Plugin::instance()->outbox->retry( form_bridge_it_ids(), time() ) ),
		'page'      => form_bridge_it_settings_page(),
		'uninstall' => form_bridge_it_uninstall(),
		'status'    => array( 'blocker' => FormBridge\Settings::sendingBlocker(), 'cron' => wp_next_scheduled( FormBridge\Scheduler::HOOK ) ),
		default     => array( 'error' => "unknown op $op" ),
	};
	wp_send_json( $result );
}

/** Fires a fixture case's hook, counting every WordPress HTTP request made while it runs. */
function form_bridge_it_fire( string $name ): array {
	$cases = require FORM_BRIDGE_IT_FIXTURES;
	if ( ! isset( $cases[ $name ] ) ) {
		return array( 'error' => "unknown case $name" );
	}
	$case   = $cases[ $name ];
	$before = form_bridge_it_max_id();
	$calls  = 0;
	$count  = static function ( $preempt ) use ( &$calls ) {
		$calls++;
		return $preempt;
	};
	if ( isset( $case['before'] ) ) {
		( $case['before'] )();
	}
	add_filter( 'pre_http_request', $count, PHP_INT_MIN );
	do_action( $case['hook'], ...$case['args'] );
	remove_filter( 'pre_http_request', $count, PHP_INT_MIN );
	return array( 'http_calls' => $calls, 'rows' => form_bridge_it_ids_after( $before ) );
}

function form_bridge_it_rows( array $ids ): array {
	$rows = array();
	foreach ( $ids as $id ) {
		$row = FormBridge\Plugin::instance()->outbox->find( $id );
		if ( null !== $row ) {
			$rows[ $id ] = array(
				'status'        => $row->status,
				'attempts'      => $row->attempts,
				'last_status'   => $row->lastStatus,
				'last_error'    => $row->lastError,
				'submission_id' => $row->submissionId,
				'webhook_id'    => $row->webhookId,
				'form_id'       => $row->formId,
				'body_sha256'   => hash( 'sha256', $row->body ),
				'next_in'       => $row->nextAttemptAt - time(),
			);
		}
	}
	return array( 'rows' => $rows );
}

/**
 * Makes time pass: pending rows become due and the every-minute job is due now, as if their
 * backoff had run out. The next wp-cron.php request then runs the job.
 */
function form_bridge_it_advance(): array {
	global $wpdb;
	$table = FormBridge\Plugin::instance()->outbox->table();
	$due   = $wpdb->query( $wpdb->prepare( "UPDATE $table SET next_attempt_at = %d WHERE status = 'pending' AND next_attempt_at > %d", time(), time() ) );
	$next  = wp_next_scheduled( FormBridge\Scheduler::HOOK );
	if ( false !== $next && $next > time() ) {
		wp_unschedule_event( $next, FormBridge\Scheduler::HOOK );
		wp_schedule_event( time(), FormBridge\Scheduler::SCHEDULE, FormBridge\Scheduler::HOOK );
	}
	return array( 'made_due' => (int) $due );
}

/** Sends delivered rows again, as after a lost answer: same webhook-id, same body. */
function form_bridge_it_resend( array $ids ): array {
	global $wpdb;
	$table = FormBridge\Plugin::instance()->outbox->table();
	$ids   = implode( ',', array_map( 'intval', $ids ) );
	$count = $wpdb->query( $wpdb->prepare( "UPDATE $table SET status = 'pending', next_attempt_at = %d WHERE id IN ($ids) AND status = 'done'", time() ) );
	return array( 'resent' => (int) $count );
}

/** What the settings page's "send test submission" button does. */
function form_bridge_it_test_send(): array {
	$body                = FormBridge\Envelope::encode(
		FormBridge\Envelope::build(
			FormBridge\Settings::siteDomain(),
			new FormBridge\Submission( 'test', 'form-bridge-test', array( 'message' => 'Test submission' ), new DateTimeImmutable() ),
			false,
			FormBridge\Plugin::VERSION
		)
	);
	[ $reply, $outcome ] = FormBridge\Plugin::instance()->dispatcher->sendOnce( FormBridge\Intake::newWebhookId(), $body );
	return array( 'status' => $reply->status, 'body' => $reply->body, 'verdict' => $outcome->verdict->value, 'error' => $reply->transportError );
}

function form_bridge_it_ids(): array {
	return array_values( array_filter( array_map( 'intval', explode( ',', (string) ( $_GET['ids'] ?? '' ) ) ) ) );
}

function form_bridge_it_max_id(): int {
	global $wpdb;
	return (int) $wpdb->get_var( 'SELECT COALESCE(MAX(id), 0) FROM ' . FormBridge\Plugin::instance()->outbox->table() );
}

function form_bridge_it_ids_after( int $id ): array {
	global $wpdb;
	$table = FormBridge\Plugin::instance()->outbox->table();
	return array_map( 'intval', $wpdb->get_col( $wpdb->prepare( "SELECT id FROM $table WHERE id > %d ORDER BY id", $id ) ) );
}

/** The settings page as an administrator sees it. */
function form_bridge_it_settings_page(): array {
	require_once ABSPATH . 'wp-admin/includes/template.php';
	wp_set_current_user( 1 );
	$plugin = FormBridge\Plugin::instance();
	ob_start();
	( new FormBridge\Admin\SettingsPage( $plugin->outbox, $plugin->dispatcher ) )->render();
	return array( 'html' => (string) ob_get_clean() );
}

/** Deactivates and uninstalls the plugin as the Plugins screen does, then reports what is left. */
function form_bridge_it_uninstall(): array {
	global $wpdb;
	require_once ABSPATH . 'wp-admin/includes/plugin.php';
	$table = FormBridge\Plugin::instance()->outbox->table();
	deactivate_plugins( 'form-bridge/form-bridge.php' );
	uninstall_plugin( 'form-bridge/form-bridge.php' );
	return array(
		'table_left'   => $wpdb->get_var( $wpdb->prepare( 'SHOW TABLES LIKE %s', $table ) ),
		'options_left' => $wpdb->get_col( "SELECT option_name FROM {$wpdb->options} WHERE option_name LIKE 'form\\_bridge%'" ),
		'cron_left'    => wp_next_scheduled( FormBridge\Scheduler::HOOK ),
		'active'       => is_plugin_active( 'form-bridge/form-bridge.php' ),
	);
}
