<?php
/**
 * Wires the parts together and owns the plugin's life cycle: activation creates the outbox table
 * and the every-minute job, deactivation removes the job, and an outdated or missing table is
 * (re)created on load. Uninstalling is uninstall.php's job.
 */

namespace FormBridge;

use FormBridge\Admin\SettingsPage;

final class Plugin {
	public const VERSION = '0.1.0';

	private static ?self $instance = null;

	public readonly Outbox $outbox;
	public readonly Dispatcher $dispatcher;
	public readonly Scheduler $scheduler;
	public readonly Intake $intake;

	private function __construct() {
		$this->outbox     = new Outbox();
		$this->dispatcher = new Dispatcher( $this->outbox, new HttpSender( self::VERSION ) );
		$this->scheduler  = new Scheduler( \Closure::fromCallable( array( $this, 'runJob' ) ) );
		$this->intake     = new Intake( $this->outbox, $this->scheduler, self::VERSION );
	}

	public static function instance(): self {
		return self::$instance ??= new self();
	}

	public static function boot( string $pluginFile ): void {
		$plugin = self::instance();
		( new FormHooks( $plugin->intake ) )->register();
		$plugin->scheduler->register();
		register_activation_hook( $pluginFile, array( self::class, 'activate' ) );
		register_deactivation_hook( $pluginFile, array( self::class, 'deactivate' ) );
		add_action( 'plugins_loaded', array( self::class, 'upgradeIfNeeded' ) );
		if ( is_admin() ) {
			( new SettingsPage( $plugin->outbox, $plugin->dispatcher ) )->register( $pluginFile );
		}
	}

	/** The every-minute job: send what is due, then prune delivered rows past retention. */
	public function runJob(): void {
		$this->dispatcher->run();
		$this->outbox->pruneDone( time() - Settings::retentionDays() * DAY_IN_SECONDS );
	}

	public static function activate(): void {
		self::instance()->outbox->install();
		self::instance()->scheduler->ensureRecurring();
	}

	public static function deactivate(): void {
		Scheduler::unscheduleAll();
	}

	public static function upgradeIfNeeded(): void {
		if ( Outbox::DB_VERSION !== get_option( Outbox::DB_VERSION_OPTION ) ) {
			self::instance()->outbox->install();
		}
	}
}
