<?php
/**
 * Unit tests run without WordPress: its hook path is stood in by support/wordpress-stubs.php.
 */

require __DIR__ . '/support/wordpress-stubs.php';
require dirname( __DIR__, 2 ) . '/form-bridge/includes/autoload.php';
require __DIR__ . '/support/HookPathTestCase.php';

FormBridgeTestWorld::reset();
