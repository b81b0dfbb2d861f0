<?php
/**
 * One form submission as a form plugin handed it over, before it becomes an envelope: which
 * plugin it came from, the form, the mapped fields, the plugin's own submission time and what is
 * known about the request.
 */

namespace FormBridge;

final class Submission {
	/**
	 * @param array<string, mixed> $fields keys are labels or names; values are scalars, lists
	 *                                     (checkboxes) or one level of nested maps (name, address).
	 */
	public function __construct(
		public readonly string $source,
		public readonly string $formId,
		public readonly array $fields,
		public readonly \DateTimeImmutable $submittedAt,
		public readonly ?string $pageUrl = null,
		public readonly ?string $referrer = null,
		public readonly ?string $userAgent = null,
		public readonly ?string $ip = null,
	) {}

	/** @param array<string, mixed> $fields */
	public function withFields( array $fields ): self {
		return new self( $this->source, $this->formId, $fields, $this->submittedAt, $this->pageUrl, $this->referrer, $this->userAgent, $this->ip );
	}

	public function withFormId( string $formId ): self {
		return new self( $this->source, $formId, $this->fields, $this->submittedAt, $this->pageUrl, $this->referrer, $this->userAgent, $this->ip );
	}
}
