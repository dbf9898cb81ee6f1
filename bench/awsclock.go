package bench

import (
	"context"
	"time"
	_ "unsafe" // go:linkname

	_ "github.com/aws/aws-sdk-go-v2/aws/retry"
)

// awsSleepWithContext is the AWS SDK's sleep seam (internal/sdk; its doc
// says it "can be overridden for testing"), which AdaptiveMode uses to wait
// for a token.
//
//go:linkname awsSleepWithContext github.com/aws/aws-sdk-go-v2/internal/sdk.SleepWithContext
var awsSleepWithContext func(context.Context, time.Duration) error

func init() {
	orig := awsSleepWithContext
	awsSleepWithContext = func(ctx context.Context, d time.Duration) error {
		return orig(ctx, max(d, time.Nanosecond))
	}
}
