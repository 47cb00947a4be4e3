"""`spawn selftest`: prove the whole chain in the user's own AWS account with one short-lived instance.

``stages`` is the pure part (what is checked, the verdicts, the report); ``proof`` is the script
that runs on the instance with the instance's own role credentials; ``run`` drives a launch
through the same code as `spawn launch` and follows the chain, cleaning up everything it created.
"""
