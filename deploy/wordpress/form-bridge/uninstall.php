<?php
/**
 * Uninstalling removes everything the plugin stored: the outbox table (with any submissions
 * still in it), the settings, the sealed secret and the scheduled jobs, on every site of a
 * network.
 */

if ( ! defined( 'WP_UNINSTALL_PLUGIN' ) ) {
	exit;
}

require_once __DIR__ . '/includes/autoload.php';

$form_bridge_forget = static function (): void {
	( new FormBridge\Outbox() )->drop();
	FormBridge\Settings::delete();
	FormBridge\Scheduler::unscheduleAll();
	delete_transient( FormBridge\Admin\SettingsPage::NOTICE_TRANSIENT_PREFIX . get_current_user_id() );
};

if ( is_multisite() ) {
	foreach ( get_sites( array( 'fields' => 'ids', 'number' => 0 ) ) as $form_bridge_site_id ) {
		switch_to_blog( $form_bridge_site_id );
		$form_bridge_forget();
		restore_current_blog();
	}
} else {
	$form_bridge_forget();
}
