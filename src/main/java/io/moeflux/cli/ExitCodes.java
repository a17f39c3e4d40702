package io.moeflux.cli;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The process exit codes of every command, in one table (also printed by {@code --help} and the README).
 * Scripts branch on them, so they never change meaning.
 */
public final class ExitCodes {
    private ExitCodes() {}

    /** The command did what was asked. */
    public static final int OK = 0;
    /** {@code verify} found checkpoints that differ (or {@code demo} a round trip that is not bit-exact). */
    public static final int DIFFERENT = 1;
    /** Bad command line: unknown option, missing argument, invalid value. */
    public static final int USAGE = 2;
    /** The input is not what the command needs: invalid checkpoint, missing experts, bad config.json. */
    public static final int BAD_INPUT = 3;
    /** Reading or writing failed: missing file, permission, disk full. */
    public static final int IO_FAILURE = 4;
    /** The output exists and is not empty, and {@code --force} was not given. */
    public static final int OUTPUT_EXISTS = 5;
    /** A bug in moeflux; {@code --debug} prints the stack trace. */
    public static final int INTERNAL_ERROR = 70;
    /** Ctrl-C (SIGINT), as shells report a process it ended: 128 + 2. Nothing half-written is left. */
    public static final int CANCELLED = 130;

    /** The table as {@code --help} shows it, code (right-aligned, as picocli lays it out) to meaning. */
    static Map<String, String> helpTable() {
        Map<String, String> table = new LinkedHashMap<>();
        table.put(" " + OK, "success");
        table.put(" " + DIFFERENT, "verify found differences");
        table.put(" " + USAGE, "invalid command line");
        table.put(" " + BAD_INPUT, "bad input: invalid checkpoint, missing experts, bad config.json");
        table.put(" " + IO_FAILURE, "I/O failure");
        table.put(" " + OUTPUT_EXISTS, "output exists and is not empty (use --force)");
        table.put(String.valueOf(INTERNAL_ERROR), "internal error (rerun with --debug for the stack trace)");
        table.put(String.valueOf(CANCELLED), "cancelled (Ctrl-C); nothing half-written is left");
        return table;
    }
}
