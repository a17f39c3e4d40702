# moeflux CLI image: built from this repository, runs `moeflux ARGS...` (see README.md, "Kafka").
#   docker build -t moeflux .
#   docker run --rm -v "$PWD/ckpt:/data" moeflux from-hf /data/hf /data/native
FROM eclipse-temurin:25-jdk AS build
WORKDIR /build
# The Maven wrapper checks the sum of the .zip distribution it names, and without unzip it would fetch the .tar.gz.
RUN apt-get update && apt-get install -y --no-install-recommends unzip && rm -rf /var/lib/apt/lists/*
COPY .mvn .mvn
COPY mvnw pom.xml ./
COPY pipeline pipeline
COPY connectors connectors
COPY src src
RUN ./mvnw -q -B -DskipTests -pl src -am package

FROM eclipse-temurin:25-jre
COPY --from=build /build/src/target/moeflux.jar /opt/moeflux/moeflux.jar
# The launcher's JVM options, from the one file that lists them.
COPY src/jvm.options /opt/moeflux/jvm.options
ENTRYPOINT ["java", "@/opt/moeflux/jvm.options", "-jar", "/opt/moeflux/moeflux.jar"]
CMD ["--help"]
