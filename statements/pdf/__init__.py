"""PDF statements with reportlab (platypus).

Fonts, paragraph and table styles are built once per process (`theme()`); a render only builds
flowables. Every free-text value (names, project ids, fund/orgs, references, resource names)
is a Paragraph in a fixed-width cell, so long values wrap, words longer than a cell included,
and nothing overlaps. The detail table flows over as many pages as it needs and repeats its
header row; every page carries "Page x of y" and the statement number in its footer.

By part: `theme` (colours, fonts, styles), `data` (what a PDF shows), `parts` (canvas, cells,
formatted values), `layout` (the statement laid out and rendered). The names are re-exported here."""

from .data import (  # noqa: F401
    LineData,
    StatementData,
)
from .layout import (  # noqa: F401
    _NO_PADDING,
    _quantity,
    _StatementDoc,
    build_flowables,
    render_statement_pdf,
)
from .parts import (  # noqa: F401
    _CELL_PADDING,
    _cell,
    _fits,
    _issued_text,
    _money,
    _NumberedCanvas,
    _p,
    _period_label,
    _resource_cell,
    _Text,
    _TwoLines,
)
from .theme import (  # noqa: F401
    _UNICODE_FONT_DIRS,
    ACCENT,
    BAND,
    INK,
    MUTED,
    NOTE_BG,
    NOTE_RULE,
    RULE,
    STANDARD_FONTS,
    Fonts,
    Theme,
    _needs_unicode,
    _page_size,
    _unicode_fonts,
    theme,
)
