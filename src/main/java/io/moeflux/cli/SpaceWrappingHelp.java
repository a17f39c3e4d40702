package io.moeflux.cli;

import java.util.List;

import picocli.CommandLine;
import picocli.CommandLine.Help.Ansi.Text;
import picocli.CommandLine.Help.Column;
import picocli.CommandLine.Help.ColorScheme;
import picocli.CommandLine.Help.TextTable;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Model.OptionSpec;
import picocli.CommandLine.Model.PositionalParamSpec;

/**
 * Usage help that wraps lines at spaces only. Picocli wraps with the JDK's line breaker, which also breaks after
 * '.', '/' and ':', so a narrow terminal saw {@code config.} / {@code json} and {@code kafka://HOST:} /
 * {@code PORT}: names a user copies must stay whole. Covers the option table and the description, header and
 * footer paragraphs; the synopsis only holds space-separated options already.
 */
final class SpaceWrappingHelp extends CommandLine.Help {

    static final CommandLine.IHelpFactory FACTORY = SpaceWrappingHelp::new;

    private SpaceWrappingHelp(CommandSpec spec, ColorScheme colorScheme) {
        super(spec, colorScheme);
    }

    @Override
    public Layout createDefaultLayout(List<OptionSpec> options, List<PositionalParamSpec> positionals,
                                      ColorScheme scheme) {
        Layout picocli = super.createDefaultLayout(options, positionals, scheme);
        return new Layout(scheme, new Table(scheme, picocli.textTable().columns()),
                createDefaultOptionRenderer(), createDefaultParameterRenderer());
    }

    @Override
    public String description(Object... params) {
        return paragraphs(commandSpec().usageMessage().description(), params);
    }

    @Override
    public String header(Object... params) {
        return paragraphs(commandSpec().usageMessage().header(), params);
    }

    @Override
    public String footer(Object... params) {
        return paragraphs(commandSpec().usageMessage().footer(), params);
    }

    private String paragraphs(String[] lines, Object... params) {
        Table table = new Table(colorScheme(), new Column(commandSpec().usageMessage().width(), 0, Column.Overflow.WRAP));
        table.indentWrappedLines = 0;
        for (String line : lines) {
            table.addRowValues(String.format(line, params));
        }
        return table.toString();
    }

    /** A table whose wrapping columns break at spaces; a word longer than a line is broken by picocli. */
    private static final class Table extends TextTable {
        private final ColorScheme scheme;

        Table(ColorScheme scheme, Column... columns) {
            super(scheme, columns);
            this.scheme = scheme;
        }

        @Override
        public Cell putValue(int row, int col, Text value) {
            Column column = columns()[col];
            if (column.overflow != Column.Overflow.WRAP || value == null || value.plainString().isEmpty()) {
                return super.putValue(row, col, value);
            }
            String plain = value.plainString();
            String continuation = " ".repeat(indentWrappedLines);
            int start = 0;
            int room = column.width - column.indent;
            while (true) {
                int end = lineEnd(plain, start, room);
                Text line = value.substring(start, end);
                row = super.putValue(row, col, start == 0 ? line : scheme.text(continuation).concat(line)).row;
                start = end;
                while (start < plain.length() && plain.charAt(start) == ' ') {
                    start++;
                }
                if (start >= plain.length()) {
                    return new Cell(col, row);
                }
                addEmptyRow();
                row++;
                room = column.width - column.indent - indentWrappedLines;
            }
        }

        /** The end of the longest run of words from {@code start} that fits {@code room} columns. */
        private static int lineEnd(String text, int start, int room) {
            if (text.length() - start <= room) {
                return text.length();
            }
            int lastSpace = text.lastIndexOf(' ', start + room);
            if (lastSpace > start) {
                return lastSpace;
            }
            int nextSpace = text.indexOf(' ', start);
            return nextSpace < 0 ? text.length() : nextSpace;
        }
    }
}
