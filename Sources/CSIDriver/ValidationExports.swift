// Request validation and CSIError live in CSIValidation (no NIO, no transport), so the fuzz
// harnesses can build against them alone; every file of CSIDriver sees them as before.
@_exported import CSIValidation
