package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.PrintWriter;
import java.io.StringWriter;
import org.junit.jupiter.api.Test;

class ConsoleProgressTest {
    @Test
    void aRedrawShowsTensorsBytesShareRateAndEtaOnOneLine() {
        StringWriter err = new StringWriter();
        ConsoleProgress progress = new ConsoleProgress(new PrintWriter(err), "from-hf", 10, 1000, false);
        progress.tensorWritten("a");
        progress.tensorWritten("b");
        progress.bytesWritten(250);
        progress.bytesWritten(250);
        progress.redraw();
        assertThat(err.toString())
                .startsWith("\r\033[Kfrom-hf: 2/10 tensors, 500 B of 1.00 kB (50%), ")
                .containsPattern(" [kMG]B/s")
                .contains("ETA ")
                .doesNotContain("\n");
    }

    @Test
    void withoutATerminalNothingIsPrinted() {
        StringWriter err = new StringWriter();
        try (ConsoleProgress progress = new ConsoleProgress(new PrintWriter(err), "copy", 1, 1, false)) {
            progress.tensorWritten("a");
            progress.bytesWritten(1);
        }
        assertThat(err.toString()).isEmpty();
    }

    @Test
    void progressIsRedrawnOnlyOnATerminalThatIsNotDumb() {
        assertThat(ConsoleProgress.redraws(true, "xterm-256color")).isTrue();
        assertThat(ConsoleProgress.redraws(true, null)).isTrue();
        assertThat(ConsoleProgress.redraws(true, "dumb")).isFalse();
        assertThat(ConsoleProgress.redraws(false, "xterm")).isFalse();
    }
}
