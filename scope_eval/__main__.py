from scope_eval.cli import main

main()
