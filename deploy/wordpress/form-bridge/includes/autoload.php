<?php
/**
 * Loads FormBridge\Foo\Bar from includes/Foo/Bar.php.
 */

spl_autoload_register(
	static function ( string $class ): void {
		$prefix = 'FormBridge\\';
		if ( ! str_starts_with( $class, $prefix ) ) {
			return;
		}
		$file = __DIR__ . '/' . str_replace( '\\', '/', substr( $class, strlen( $prefix ) ) ) . '.php';
		if ( is_file( $file ) ) {
			require_once $file;
		}
	}
);
