fn main() -> std::process::ExitCode {
    facecompare::cli::main()
}
