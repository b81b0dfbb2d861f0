<?php

namespace FormBridge;

/** What to do with an outbox row after an attempt. */
enum Verdict: string {
	case Done   = 'done';
	case Retry  = 'retry';
	case Failed = 'failed';
}
