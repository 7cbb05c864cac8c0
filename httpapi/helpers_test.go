package httpapi_test

import "github.com/opgate/opgate"

func opID(s string) opgate.OperatorID { return opgate.OperatorID(s) }
