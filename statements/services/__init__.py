"""Every write of the statements app: generating (versioned) statements, rendering their PDFs,
queueing and sending deliveries. Each function is one transaction (sending is the exception by
nature: the claim is committed before the message goes out, so it is never sent twice).

By stage: `generate`, `rendering`, `delivery`. The names are re-exported here so callers keep
`from statements import services`."""

from ._common import (  # noqa: F401
    Status,
    _pi_email,
    logger,
)
from .delivery import (  # noqa: F401
    QueueOutcome,
    _delivery_failed,
    _set_key,
    deliveries_mark_interrupted,
    deliveries_queue,
    delivery_context,
    delivery_message,
    delivery_resend,
    delivery_send,
)
from .generate import (  # noqa: F401
    GenerateOutcome,
    StatementResult,
    _issue,
    _log_issued,
    _next_sequence,
    _plan,
    _result,
    _statement_result,
    statement_number,
    statements_generate,
)
from .rendering import (  # noqa: F401
    pdf_data,
    pdf_file_write,
    pdf_lines,
    statement_pdf_data,
    statement_record_render_error,
    statement_render_pdf,
    statements_render_pdfs,
)
