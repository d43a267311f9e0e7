package com.amazonaws.ml.mms.http.messages;

/**
 * Empty. scorer's own class in the package of MMS's {@code RegisterModelRequest}, which has no
 * other class: a {@code MethodHandles.Lookup} can only define a class in its lookup class's
 * package, so {@code ai.scorer.mms.BatchDefaults} anchors its lookup here. The plugin jar is
 * on MMS's class path, so this class is in MMS's class loader and runtime package; if it were
 * not, the installer would not find it there and would install nothing.
 */
final class ScorerAnchor {
    private ScorerAnchor() {}
}
