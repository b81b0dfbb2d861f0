<?php
/**
 * Plugin Name:       Form-Bridge
 * Description:       Sends every form submission (Gravity Forms, WPForms, Contact Form 7, Fluent Forms, custom forms) to Form-Bridge, signed, through a durable outbox that retries until it is delivered.
 * Version:           0.1.0
 * Requires at least: 6.1
 * Requires PHP:      8.1
 * Author:            Form-Bridge
 * License:           GPL-2.0-or-later
 * Text Domain:       form-bridge
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

if ( version_compare( PHP_VERSION, '8.1', '<' ) ) {
	add_action(
		'admin_notices',
		static function () {
			echo '<div class="notice notice-error"><p>Form-Bridge needs PHP 8.1 or later.</p></div>';
		}
	);
	return;
}

require_once __DIR__ . '/includes/autoload.php';

FormBridge\Plugin::boot( __FILE__ );
