package io.moeflux.cli;

import io.moeflux.connect.InvalidCheckpointException;
import io.moeflux.connect.OutputExistsException;
import io.moeflux.connect.kafka.InvalidEndpointException;
import io.moeflux.hy3.MissingExpertsException;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.AccessDeniedException;
import java.nio.file.DirectoryNotEmptyException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.FileSystemException;
import java.nio.file.NoSuchFileException;
import java.nio.file.NotDirectoryException;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.CancellationException;
import java.util.function.BooleanSupplier;
import java.util.regex.Pattern;
import picocli.CommandLine;
import picocli.CommandLine.IExecutionExceptionHandler;
import picocli.CommandLine.IParameterExceptionHandler;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.ParseResult;
import reactor.core.Exceptions;

/**
 * Turns failures into one line on stderr and an exit code from {@link ExitCodes}; the stack trace only
 * with {@code --debug} or {@code MOEFLUX_DEBUG=1}.
 */
final class ErrorHandler implements IExecutionExceptionHandler, IParameterExceptionHandler {
    private final BooleanSupplier debug;

    ErrorHandler(BooleanSupplier debug) {
        this.debug = debug;
    }

    @Override
    public int handleParseException(ParameterException ex, String[] args) {
        CommandLine cl = ex.getCommandLine();
        String name = cl.getCommandSpec().qualifiedName();
        PrintWriter err = cl.getErr();
        err.println(name + ": " + Human.printable(String.valueOf(ex.getMessage())) + " (see '" + name + " --help')");
        if (debug.getAsBoolean()) {
            ex.printStackTrace(err);
        }
        err.flush();
        if (Arrays.asList(args).contains("--json")) {
            printJson(cl, ExitCodes.USAGE, String.valueOf(ex.getMessage()));
        }
        return ExitCodes.USAGE;
    }

    @Override
    public int handleExecutionException(Exception ex, CommandLine cl, ParseResult parseResult) {
        Throwable cause = Exceptions.unwrap(ex);
        if (cause instanceof CancellationException) {
            // Ctrl-C came before the work began: the shutdown hook has said so already.
            return ExitCodes.CANCELLED;
        }
        Failure failure = classify(cause);
        PrintWriter err = cl.getErr();
        // Messages name tensors and paths from the input: a control character in one must not reach the terminal.
        err.println(cl.getCommandSpec().qualifiedName() + ": " + Human.printable(asTheUserNamesIt(String.valueOf(failure.message))));
        if (debug.getAsBoolean()) {
            cause.printStackTrace(err);
        }
        err.flush();
        ParseResult leaf = parseResult;
        while (leaf.hasSubcommand()) {
            leaf = leaf.subcommand();
        }
        if (leaf.hasMatchedOption("--json")) {
            printJson(cl, failure.exitCode, asTheUserNamesIt(String.valueOf(failure.message)));
        }
        return failure.exitCode;
    }

    /** A file of the hidden staging folder an output is written in ({@code DIR/.NAME.partial-XXXX/FILE}). */
    private static final Pattern STAGED = Pattern.compile("/\\.([^/]+)\\.partial-[0-9a-z]+(?=/|\\b)");

    /**
     * The message with staging paths named as the output they were to become: the staging folder is
     * internal, and the user knows the output by the name they gave ({@code OUT/FILE}).
     */
    static String asTheUserNamesIt(String message) {
        return STAGED.matcher(message).replaceAll("/$1");
    }

    /** With {@code --json}, a failure is also one JSON document on stdout, where a script reads the result. */
    private static void printJson(CommandLine cl, int exitCode, String message) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("error", message);
        m.put("exit_code", exitCode);
        JsonOutput.print(cl.getOut(), m);
    }

    private record Failure(int exitCode, String message) {}

    private static Failure classify(Throwable t) {
        for (Throwable c = t; c != null; c = c.getCause()) {
            Failure f = recognise(Exceptions.unwrap(c), c == t);
            if (f != null) {
                return f;
            }
        }
        return new Failure(ExitCodes.INTERNAL_ERROR, "internal error: " + t);
    }

    /** The failure {@code e} stands for, or null for wrappers (UncheckedIOException, Reactor's) and unknowns. */
    private static Failure recognise(Throwable e, boolean outermost) {
        return switch (e) {
            case OutputExistsException o -> new Failure(ExitCodes.OUTPUT_EXISTS, o.getMessage());
            case MissingExpertsException m -> new Failure(ExitCodes.BAD_INPUT, m.getMessage());
            case InvalidCheckpointException i -> new Failure(ExitCodes.BAD_INPUT, i.getMessage());
            case BadInputException b -> new Failure(ExitCodes.BAD_INPUT, b.getMessage());
            case InvalidEndpointException i -> new Failure(ExitCodes.USAGE, i.getMessage());
            case NoSuchFileException n -> new Failure(ExitCodes.IO_FAILURE, "no such file or folder: " + n.getFile());
            case AccessDeniedException a -> new Failure(ExitCodes.IO_FAILURE, "permission denied: " + a.getFile());
            case FileSystemException f -> new Failure(ExitCodes.IO_FAILURE, describe(f));
            case IOException io -> new Failure(ExitCodes.IO_FAILURE, "I/O error: "
                    + (io.getMessage() != null ? io.getMessage() : io.getClass().getSimpleName()));
            // The adapter rejects tensors it cannot convert (wrong expert shapes, clashing names) with an
            // IllegalArgumentException naming the tensor; one wrapped in something else is not ours to read.
            case IllegalArgumentException i when outermost -> new Failure(ExitCodes.BAD_INPUT, i.getMessage());
            default -> null;
        };
    }

    /** Java names only the file for most of these; say what went wrong with it too. */
    private static String describe(FileSystemException f) {
        String what = f.getReason() != null ? f.getReason() : switch (f) {
            case FileAlreadyExistsException e -> "already exists";
            case NotDirectoryException e -> "is not a folder";
            case DirectoryNotEmptyException e -> "is a folder that is not empty";
            default -> f.getClass().getSimpleName();
        };
        return "I/O error on " + f.getFile() + (f.getOtherFile() != null ? " -> " + f.getOtherFile() : "") + ": " + what;
    }
}
